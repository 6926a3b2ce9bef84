"""The endpoints the dashboard reads (services/submitter/ui/api.py) and the list filters it uses,
on the real app over real PostgreSQL and Redis: each answers for the key's tenant only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from services.submitter import handlers
from services.submitter.deps import Deps
from services.submitter.ui import pages
from shared.domain import Job
from shared.eventstore import JobStore, StoreOverloadedError, existing
from shared.settings import StoreSettings
from tests.api import actor_of, assert_problem, bearer, issue_key, served
from tests.jobs import CAUSE, fail


class Api:
    def __init__(self, client: httpx.AsyncClient, deps: Deps, url: str, app: FastAPI) -> None:
        self.client, self.deps, self.url, self.app = client, deps, url, app

    def key(self, tenant: str, scopes: tuple[str, ...] = ("admin",)) -> dict[str, str]:
        return bearer(issue_key(self.url, self.deps.keys, tenant, scopes))

    async def job(self, tenant: str, to: str = "PENDING", job_type: str = "cpu.hash") -> uuid.UUID:
        """A job of ``tenant`` written to the log and projected to Redis, brought to ``to``."""

        def write(store: JobStore) -> uuid.UUID:
            job_id = uuid.uuid4()
            payload = {"text": "x"}
            store.execute(
                job_id,
                lambda _: Job.submit(
                    CAUSE,
                    job_type=job_type,
                    payload=payload,
                    job_id=job_id,
                    tenant=tenant,
                    max_attempts=1,
                ),
            )
            now = datetime.now(UTC)
            steps: list[Any] = []
            if to in ("COMPLETED", "FAILED"):
                steps = [
                    lambda j: j.schedule(CAUSE, now),
                    lambda j: j.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=now),
                ]
            if to == "COMPLETED":
                steps.append(lambda j: j.complete(CAUSE, worker_id="w1", attempt=1, result={}))
            if to == "FAILED":
                steps.append(lambda j: fail(j, retryable=False, error_message="boom", now=now))
            for step in steps:
                store.execute(job_id, existing(step))
            return job_id

        job_id = await self.deps.store.run_sync(write, self.deps.store.store)
        await self.deps.view.put_jobs([await self.deps.store.get(job_id)])
        return job_id


@pytest.fixture
async def api(store_settings: StoreSettings, redis_url: str) -> AsyncIterator[Api]:
    async with served(store_settings, redis_url, with_key=False) as api:
        yield Api(api.client, api.deps, store_settings.postgres_url, api.app)


async def test_the_overview_counts_the_keys_tenant_only(api: Api) -> None:
    # Given jobs of two tenants in the log and the projection
    acme, globex = f"acme-{uuid.uuid4().hex[:6]}", f"globex-{uuid.uuid4().hex[:6]}"
    for status in ("COMPLETED", "COMPLETED", "FAILED", "PENDING"):
        await api.job(acme, status)
    await api.job(acme, "COMPLETED", job_type="io.sleep")
    await api.job(globex, "COMPLETED")

    # When acme's reader asks for the overview
    answer = await api.client.get("/v1/overview", headers=api.key(acme, ("read",)))

    # Then it counts acme's jobs by status and type, and per minute from the log
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tenant"] == acme
    assert body["statuses"] == {
        "PENDING": 1,
        "SCHEDULED": 0,
        "RUNNING": 0,
        "COMPLETED": 3,
        "FAILED": 1,
        "CANCELLED": 0,
    }
    assert body["types"] == {"cpu.hash": 4, "io.sleep": 1}
    assert len(body["minutes"]) == 15
    assert sum(m["completed"] for m in body["minutes"]) == 3
    assert sum(m["failed"] for m in body["minutes"]) == 1
    assert set(body["lag"]) == {"relay_events", "projection_events"}  # not the log's size
    # a reader is not shown the dead letters; an admin of the tenant is
    assert body["dead_letters"] is None
    admin = (await api.client.get("/v1/overview", headers=api.key(acme))).json()
    assert admin["dead_letters"] == {"recorded_24h": 0, "newest_at": None}


async def test_a_bulk_cancel_records_the_key_and_reason_and_reports_each_job(api: Api) -> None:
    # Given two pending jobs, a completed one, and another tenant's pending job
    acme = f"acme-{uuid.uuid4().hex[:6]}"
    first, second = await api.job(acme), await api.job(acme)
    done = await api.job(acme, "COMPLETED")
    theirs = await api.job(f"globex-{uuid.uuid4().hex[:6]}")
    key = api.key(acme, ("cancel",))

    # When acme's operator cancels all four (one named twice) in one request
    ids = [str(i) for i in (first, second, done, theirs, first)]
    answer = await api.client.post(
        "/v1/bulk/cancel", json={"ids": ids, "reason": "cleanup"}, headers=key
    )

    # Then each job once: two cancelled, a conflict, and the other tenant's job not found
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["actor"] == actor_of(key, acme)
    outcome = {
        item["id"]: (item["ok"], item["status"], item["http_status"]) for item in body["items"]
    }
    assert outcome == {
        str(first): (True, "CANCELLED", 202),
        str(second): (True, "CANCELLED", 202),
        str(done): (False, None, 409),
        str(theirs): (False, None, 404),
    }
    # And the histories record the key and the reason; nothing was written to the others
    for job_id in (first, second):
        last = (await api.deps.store.history(job_id))[-1]
        assert (type(last).__name__, last.actor, last.reason) == (
            "Cancelled",
            actor_of(key, acme),
            "cleanup",
        )
    assert type((await api.deps.store.history(done))[-1]).__name__ == "Completed"
    assert len(await api.deps.store.history(theirs)) == 1


async def test_a_bulk_requeue_needs_a_reason_and_requeues_failed_jobs_only(api: Api) -> None:
    acme = f"acme-{uuid.uuid4().hex[:6]}"
    failed, pending = await api.job(acme, "FAILED"), await api.job(acme)
    key = api.key(acme, ("cancel",))
    ids = [str(failed), str(pending)]

    # Without a reason: 422 naming it, nothing recorded
    refused = await api.client.post("/v1/bulk/requeue", json={"ids": ids}, headers=key)
    assert assert_problem(refused, 422)["errors"][0]["field"] == "reason"
    assert len(await api.deps.store.history(failed)) == 4

    # With one: the FAILED job runs again, the pending one is a conflict
    answer = await api.client.post(
        "/v1/bulk/requeue", json={"ids": ids, "reason": "fixed upstream"}, headers=key
    )
    assert answer.status_code == 200, answer.text
    assert [(i["ok"], i["http_status"]) for i in answer.json()["items"]] == [
        (True, 202),
        (False, 409),
    ]
    last = (await api.deps.store.history(failed))[-1]
    assert (type(last).__name__, last.actor, last.reason) == (
        "Requeued",
        actor_of(key, acme),
        "fixed upstream",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": []}, "ids"),
        ({"ids": [str(uuid.uuid4()) for _ in range(101)]}, "ids"),
        ({"ids": ["not-a-uuid"]}, "ids.0"),
        ({"ids": [str(uuid.uuid4())], "reason": " "}, "reason"),
        ({"ids": [str(uuid.uuid4())], "reason": "x" * 1025}, "reason"),
        ({"ids": [str(uuid.uuid4())], "extra": 1}, "extra"),
    ],
)
async def test_bad_bulk_input_is_a_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    answer = await api.client.post("/v1/bulk/cancel", json=body, headers=api.key("acme"))
    assert field in [e["field"] for e in assert_problem(answer, 422)["errors"]]


async def test_verify_recomputes_one_jobs_chain_and_names_a_tampered_version(api: Api) -> None:
    # Given a completed job of acme
    job_id = await api.job("acme", "COMPLETED")
    auditor = api.key("acme", ("audit",))

    # When an auditor asks for its verification
    answer = await api.client.get(f"/v1/jobs/{job_id}/verify", headers=auditor)

    # Then its 4 events chain
    assert answer.status_code == 200, answer.text
    assert (answer.json()["ok"], answer.json()["events"], answer.json()["problems"]) == (
        True,
        4,
        [],
    )

    # And once a row of it is edited in place (the owner's maintenance path), it says which
    with psycopg.connect(api.url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL jobtrail.maintenance = 'on'")
        conn.execute(
            "UPDATE jobtrail_events SET state = "
            "convert_to(replace(convert_from(state, 'UTF8'), 'w1', 'w9'), 'UTF8') "
            "WHERE originator_id = %s AND originator_version = 3",
            [job_id],
        )
    broken = (await api.client.get(f"/v1/jobs/{job_id}/verify", headers=auditor)).json()
    assert broken["ok"] is False
    assert [(p["kind"], p["version"]) for p in broken["problems"]] == [("hash", 3)]


async def test_the_list_filters_by_creation_time_and_idempotency_key(api: Api) -> None:
    acme = f"acme-{uuid.uuid4().hex[:6]}"
    key = api.key(acme)
    older = await api.job(acme)
    middle = await api.job(acme)
    newest = await api.job(acme)
    created = {j: (await api.deps.store.get(j)).created_on for j in (older, middle, newest)}

    async def ids(**params: Any) -> list[str]:
        answer = await api.client.get("/v1/jobs", params=params, headers=key)
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()["jobs"]]

    # since is inclusive, until exclusive, newest first
    since, until = created[middle].isoformat(), created[newest].isoformat()
    assert await ids(since=since) == [str(newest), str(middle)]
    assert await ids(until=until) == [str(middle), str(older)]
    assert await ids(since=since, until=until) == [str(middle)]
    assert await ids(since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    for naive_or_number in ("2026-01-01T00:00:00", "0.5"):
        refused = await api.client.get("/v1/jobs", params={"until": naive_or_number}, headers=key)
        assert assert_problem(refused, 422)["errors"][0]["field"] == "query.until"

    # an idempotency key finds its job in the tenant, nowhere else
    submitted = await api.client.post(
        "/v1/jobs",
        json={"type": "cpu.hash", "payload": {"text": "k"}, "idempotency_key": "order-7"},
        headers=key,
    )
    assert await ids(idempotency_key="order-7") == [submitted.json()["id"]]
    assert await ids(idempotency_key="order-7", status="FAILED") == []
    assert await ids(idempotency_key="order-8") == []
    other = await api.client.get(
        "/v1/jobs", params={"idempotency_key": "order-7"}, headers=api.key("globex")
    )
    assert other.json()["jobs"] == []


async def test_the_dashboards_files_are_served_without_a_key_with_strict_headers(
    api: Api,
) -> None:
    for path, media in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ]:
        answer = await api.client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(media)
        for header, value in pages.SECURITY_HEADERS.items():
            assert answer.headers[header] == value
    assert "default-src 'self'" in pages.SECURITY_HEADERS["Content-Security-Policy"]
    page = (await api.client.get("/ui/")).text
    # no inline script and nothing from another host
    assert "<script>" not in page and "http" not in page.replace("http-equiv", "")
    assert (await api.client.get("/ui")).headers["location"] == "/ui/"
    assert (await api.client.get("/ui/secret.txt")).status_code == 404  # only our three files
    assert (await api.client.get("/v1/overview")).status_code == 401


async def test_the_overview_says_when_its_bounded_read_of_the_log_misses_part_of_the_window(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three completed jobs of acme this minute, and a read bounded to the last 4 events
    acme = f"acme-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        await api.job(acme, "COMPLETED")
    key = api.key(acme, ("read",))
    whole = (await api.client.get("/v1/overview", headers=key)).json()
    assert (sum(m["completed"] for m in whole["minutes"]), whole["partial"]) == (3, False)
    monkeypatch.setattr("services.submitter.ui.figures.SCAN_EVENTS", 4)
    del api.app.state.ui_figures  # a fresh cache: the app keeps its figures a few seconds

    # When the overview is read again
    bounded = (await api.client.get("/v1/overview", headers=key)).json()

    # Then it counts only the last job's completion, and says the chart is partial
    assert (sum(m["completed"] for m in bounded["minutes"]), bounded["partial"]) == (1, True)


async def test_a_bulk_cancel_cut_short_by_the_store_reports_what_it_recorded(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three pending jobs, and a store that refuses the second cancel (its group-commit
    # queue full: nothing written)
    acme = f"acme-{uuid.uuid4().hex[:6]}"
    jobs = [await api.job(acme) for _ in range(3)]
    key = api.key(acme, ("cancel",))
    real, calls = handlers.cancel, 0

    async def refusing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreOverloadedError(10_000, 10_000)
        return await real(*args, **kwargs)

    monkeypatch.setattr(handlers, "cancel", refusing)
    # When they are cancelled in one request
    answer = await api.client.post(
        "/v1/bulk/cancel", json={"ids": [str(j) for j in jobs], "reason": "r"}, headers=key
    )
    # Then the recorded cancel is reported, the refused job and the rest are 503 (retry them)
    assert answer.status_code == 200, answer.text
    assert [(i["ok"], i["http_status"]) for i in answer.json()["items"]] == [
        (True, 202),
        (False, 503),
        (False, 503),
    ]
    assert calls == 2  # the rest not attempted against a store that refuses
