"""GET /v1/jobs/{id}?at=&version= and /v1/jobs/{id}/events, read from the log: the real FastAPI
app over real PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from eventsourcing.application import project_aggregate

from services.submitter.deps import Deps
from shared.eventstore.export import EventExport
from shared.settings import StoreSettings
from shared.views import RECORD_FIELDS, job_view
from tests.api import served
from tests.jobs import SKEW, prefix_at, record_a_retried_job, record_a_skewed_job, zulu


@pytest.fixture
async def api(
    store_settings: StoreSettings, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Deps]]:
    """The submitter's app with real stores (no broker: these requests need none)."""
    async with served(store_settings, redis_url, queues=["default"]) as api:
        yield api.client, api.deps


def without_extras(body: dict[str, Any]) -> dict[str, Any]:
    assert body.pop("source") == "log"
    body.pop("progress")
    return body


async def test_each_version_and_each_event_time_answer_the_fold_of_the_history(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a job with seven events
    client, deps = api
    job_id = await deps.store.run_sync(record_a_retried_job, deps.store.store)
    history = await deps.store.history(job_id)

    for n, event in enumerate(history, start=1):
        expected = job_view(project_aggregate(None, history[:n]))
        # When it is read at version n and at the time of event n
        by_version = await client.get(f"/v1/jobs/{job_id}", params={"version": n})
        by_time = await client.get(f"/v1/jobs/{job_id}", params={"at": zulu(event.timestamp)})
        # Then both are the fold of its first n events, from the log
        assert by_version.status_code == 200, by_version.text
        assert without_extras(by_version.json()) == expected
        assert without_extras(by_time.json()) == expected
    # And with no Redis entry, the plain read falls back to the same fold of the whole history
    plain = await client.get(f"/v1/jobs/{job_id}")
    assert without_extras(plain.json()) == job_view(project_aggregate(None, history))


async def test_the_api_history_is_the_audit_export_of_the_job(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a job with seven events
    client, deps = api
    job_id = await deps.store.run_sync(record_a_retried_job, deps.store.store)

    # When its history is read through the API
    answer = await client.get(f"/v1/jobs/{job_id}/events")

    # Then it is, record for record and field for field, what `jobtrail audit` exports
    assert answer.status_code == 200, answer.text
    records = answer.json()
    assert records == EventExport(deps.store.store).job_records(job_id)
    assert [tuple(r) for r in records] == [RECORD_FIELDS] * 7
    failed = records[3]
    assert (failed["event_type"], failed["attempt"], failed["worker"]) == ("AttemptFailed", 1, "w1")
    assert failed["data"]["worker_id"] == "w1" and failed["chain_hash"]


async def test_point_in_time_reads_go_to_the_log_not_to_redis(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a completed job whose Redis entry is stale (still RUNNING at version 3)
    client, deps = api
    job_id = await deps.store.run_sync(record_a_retried_job, deps.store.store)
    await deps.view.put_jobs([await deps.store.get(job_id, version=3)])

    # When it is read now, plainly and as of now
    plain = (await client.get(f"/v1/jobs/{job_id}")).json()
    now = (await client.get(f"/v1/jobs/{job_id}", params={"at": zulu(datetime.now(UTC))})).json()
    last = (await client.get(f"/v1/jobs/{job_id}", params={"version": 7})).json()

    # Then the plain read is the cache, the point-in-time reads are the log
    assert (plain["status"], plain["source"]) == ("RUNNING", "cache")
    assert (now["status"], now["source"], now["version"]) == ("COMPLETED", "log", 7)
    assert (last["status"], last["source"], last["result"]) == ("COMPLETED", "log", {"rows": 7})


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"at": "yesterday"}, ["query.at"]),
        ({"at": "2026-01-01T00:00:00"}, ["query.at"]),
        ({"version": "0"}, ["query.version"]),
        ({"version": "three"}, ["query.version"]),
        ({"at": "2026-01-01T00:00:00Z", "version": "2"}, ["query.at", "query.version"]),
    ],
)
async def test_bad_values_answer_422_naming_the_query_field(
    api: tuple[httpx.AsyncClient, Deps], params: dict[str, str], fields: list[str]
) -> None:
    client, deps = api
    job_id = await deps.store.run_sync(record_a_retried_job, deps.store.store)
    response = await client.get(f"/v1/jobs/{job_id}", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == fields


async def test_states_that_never_were_answer_404_saying_why(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a job with seven events, and an id no job has
    client, deps = api
    job_id = await deps.store.run_sync(record_a_retried_job, deps.store.store)
    created = (await deps.store.history(job_id))[0].timestamp
    unknown = uuid.uuid4()

    # When asked for a version past its last, a time before it, or an unknown job
    beyond = await client.get(f"/v1/jobs/{job_id}", params={"version": 8})
    early = zulu(created - timedelta(seconds=1))
    before = await client.get(f"/v1/jobs/{job_id}", params={"at": early})
    missing = await client.get(f"/v1/jobs/{unknown}", params={"version": 1})

    # Then each is a 404 whose detail says what is missing
    assert [r.status_code for r in (beyond, before, missing)] == [404, 404, 404]
    assert "has 7 version(s); there is no version 8" in beyond.json()["detail"]
    assert "did not exist yet" in before.json()["detail"]
    assert missing.json()["detail"] == f"job {unknown} not found"


def moments(start: datetime) -> list[datetime]:
    """Every event time of a skewed history, a microsecond either side, and far before/after."""
    stamps = sorted(start + offset for offset in SKEW)
    tick = timedelta(microseconds=1)
    around = [t + d for t in stamps for d in (-tick, timedelta(0), tick)]
    return [stamps[0] - timedelta(days=1), *around, stamps[-1] + timedelta(days=1)]


async def test_a_history_whose_timestamps_go_backwards_answers_every_time(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a job written by processes whose clocks disagree (a worker 60 s behind): its events'
    # timestamps go backwards in version order
    client, deps = api
    start = datetime.now(UTC) - timedelta(hours=1)
    job_id = await deps.store.run_sync(record_a_skewed_job, deps.store.store, start)
    history = await deps.store.history(job_id)
    assert [e.timestamp - start for e in history] == list(SKEW)

    for at in moments(start):
        # When it is read at any time
        response = await client.get(f"/v1/jobs/{job_id}", params={"at": zulu(at)})
        # Then the answer is the fold of the longest prefix stamped at or before that time:
        # 200 from the Submitted event's time on, 404 saying why before it
        prefix = prefix_at(history, at)
        if prefix:
            assert response.status_code == 200, (at, response.text)
            assert without_extras(response.json()) == job_view(project_aggregate(None, prefix))
        else:
            assert response.status_code == 404, (at, response.text)
            assert "did not exist yet" in response.json()["detail"]
    # And the worker's early stamps wait for the events before them: at the Started event's own
    # time (before the Submitted event's) the job did not exist yet; at the second event's time
    # the worker's first attempt, stamped earlier, is folded in: PENDING again at version 4
    started = await client.get(f"/v1/jobs/{job_id}", params={"at": zulu(history[2].timestamp)})
    assert started.status_code == 404
    later = await client.get(f"/v1/jobs/{job_id}", params={"at": zulu(history[1].timestamp)})
    assert (later.json()["version"], later.json()["status"]) == (4, "PENDING")
