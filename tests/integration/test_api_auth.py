"""Authentication, scopes and tenants on every endpoint of the real app (real PostgreSQL and Redis,
no broker): no key is 401, a key without the scope is 403 naming it, another tenant's job is the
404 of a job that does not exist, idempotency keys are per tenant, and the actor is the key."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute

from services.submitter.app import create_app
from services.submitter.auth import is_public, refresh_keys
from services.submitter.deps import Deps
from shared import keys
from shared.domain import Job
from shared.eventstore.tables import on_connection
from shared.jobtypes import registry
from shared.settings import StoreSettings
from tests.api import actor_of, assert_problem, bearer, issue_key, served

JOB = {"type": "cpu.hash", "payload": {"text": "mine"}}


class Api:
    def __init__(self, client: httpx.AsyncClient, deps: Deps, url: str) -> None:
        self.client, self.deps, self.url = client, deps, url

    def key(self, tenant: str, scopes: tuple[str, ...] = ("admin",)) -> dict[str, str]:
        return bearer(issue_key(self.url, self.deps.keys, tenant, scopes))


@pytest.fixture
async def api(store_settings: StoreSettings, redis_url: str) -> AsyncIterator[Api]:
    async with served(store_settings, redis_url, with_key=False) as api:
        yield Api(api.client, api.deps, store_settings.postgres_url)


def operations() -> list[tuple[str, str]]:
    """Every (method, path) the API serves, path parameters filled with a fresh job id."""
    job = str(uuid.uuid4())
    found = []
    for route in create_app().routes:
        if isinstance(route, APIRoute):
            for method in sorted(route.methods or ()):
                found.append((method, route.path.replace("{job_id}", job)))
    return found


async def test_every_endpoint_but_the_probes_needs_a_valid_key(api: Api) -> None:
    # Given a live key, an unknown one, a malformed one and a revoked one
    live = issue_key(api.url, api.deps.keys, "acme")
    revoked = issue_key(api.url, api.deps.keys, "acme")
    with psycopg.connect(api.url, autocommit=True) as conn:
        keys.revoke_key(conn, revoked.split("_")[1])
        api.deps.keys.refresh(conn)
    unknown = live[:-4] + ("AAAA" if not live.endswith("AAAA") else "BBBB")
    refused = [
        {},
        bearer(unknown),
        bearer(revoked),
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": f"Token {live}"},
    ]
    served = operations()
    assert len(served) >= 12
    # the public routes are exactly the probes and the dashboard's static files (no data): a
    # route made public by mistake fails here, not skipped below
    public = {path for _, path in served if is_public(path)}
    assert {p for p in public if p != "/ui" and not p.startswith("/ui/")} <= {"/healthz", "/readyz"}
    for lookalike in ("/uix", "/ui-data", "/v1/ui", "/healthz/x", "/readyzz", "/metrics"):
        assert not is_public(lookalike), lookalike
    for method, path in served:
        if is_public(path):
            continue
        for headers in refused:
            # When a request comes without a valid key
            answer = await api.client.request(method, path, headers=headers, json={})
            # Then it is 401 with a problem document and the scheme to use, nothing else
            assert_problem(answer, 401)
            assert answer.headers["www-authenticate"].startswith("Bearer"), (method, path)
    # And the probes answer without one
    assert (await api.client.get("/healthz")).status_code == 200
    # And the live key is served
    assert (await api.client.get("/v1/jobs", headers=bearer(live))).status_code == 200


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body", "needed"),
    [
        (("read",), "POST", "/v1/jobs", JOB, "submit"),
        (("read",), "POST", "/v1/jobs/batch", {"jobs": [JOB]}, "submit"),
        (("submit",), "GET", "/v1/jobs/{job}", None, "read"),
        (("submit",), "GET", "/v1/jobs/{job}/events", None, "read"),
        (("submit",), "GET", "/v1/jobs/{job}/wait?timeout=0", None, "read"),
        (("submit",), "GET", "/v1/jobs", None, "read"),
        (("read",), "POST", "/v1/jobs/{job}/cancel", None, "cancel"),
        (("read",), "POST", "/v1/jobs/{job}/requeue", {"reason": "r"}, "cancel"),
        (("read", "cancel"), "GET", "/v1/dead-letters", None, "admin"),
        (("read", "cancel"), "GET", "/v1/quarantine", None, "admin"),
        (("read", "audit"), "GET", "/metrics", None, "admin"),
        (("submit",), "GET", "/v1/overview", None, "read"),
        (("read", "cancel"), "GET", "/v1/jobs/{job}/verify", None, "audit"),
        (("read",), "POST", "/v1/bulk/cancel", {"ids": [str(uuid.uuid4())]}, "cancel"),
        (
            ("read",),
            "POST",
            "/v1/bulk/requeue",
            {"ids": [str(uuid.uuid4())], "reason": "r"},
            "cancel",
        ),
    ],
)
async def test_a_key_without_the_scope_is_refused_naming_it(
    api: Api, scopes: tuple[str, ...], method: str, path: str, body: Any, needed: str
) -> None:
    owner = api.key("acme")
    job = (await api.client.post("/v1/jobs", json=JOB, headers=owner)).json()["id"]
    before = len(await api.deps.store.history(uuid.UUID(job)))
    answer = await api.client.request(
        method, path.format(job=job), json=body, headers=api.key("acme", scopes)
    )
    assert assert_problem(answer, 403)["scope"] == needed
    assert needed in answer.json()["detail"]
    # nothing was recorded
    assert len(await api.deps.store.history(uuid.UUID(job))) == before


async def test_another_tenants_job_is_not_found_on_every_endpoint(api: Api) -> None:
    # Given a job of tenant acme, and an admin key of tenant globex
    acme, globex = api.key("acme"), api.key("globex")
    mine = await api.client.post("/v1/jobs", json=JOB, headers=acme)
    assert mine.status_code == 202 and mine.json()["id"]
    job = mine.json()["id"]
    history = await api.deps.store.history(uuid.UUID(job))
    nobody = str(uuid.uuid4())

    async def both(method: str, path: str, **options: Any) -> tuple[httpx.Response, ...]:
        theirs = await api.client.request(method, path.format(job=job), headers=globex, **options)
        unknown = await api.client.request(
            method, path.format(job=nobody), headers=globex, **options
        )
        return theirs, unknown

    # When globex tries every endpoint that names a job with acme's job id
    for method, path, options in [
        ("GET", "/v1/jobs/{job}", {}),
        ("GET", "/v1/jobs/{job}", {"params": {"version": 1}}),
        ("GET", "/v1/jobs/{job}", {"params": {"at": "2100-01-01T00:00:00Z"}}),
        ("GET", "/v1/jobs/{job}", {"params": {"version": 99}}),  # past its last version
        ("GET", "/v1/jobs/{job}", {"params": {"at": "2000-01-01T00:00:00Z"}}),  # before it
        ("GET", "/v1/jobs/{job}/events", {}),
        ("GET", "/v1/jobs/{job}/wait", {"params": {"timeout": 5}}),  # 404 at once, not after 5 s
        ("POST", "/v1/jobs/{job}/cancel", {"json": {"reason": "not yours"}}),
        ("POST", "/v1/jobs/{job}/requeue", {"json": {"reason": "not yours"}}),
        ("GET", "/v1/dead-letters?job_id={job}", {}),
        ("GET", "/v1/quarantine?job_id={job}", {}),
        ("GET", "/v1/jobs/{job}/verify", {}),
    ]:
        theirs, unknown = await both(method, path, **options)
        # Then it is the 404 of a job that does not exist, word for word but the id
        assert_problem(theirs, 404)
        assert_problem(unknown, 404)
        assert theirs.json()["detail"].replace(job, nobody) == unknown.json()["detail"], path
        assert theirs.json().keys() == unknown.json().keys()
    # And the job is in no list of globex's, and still in acme's
    listed = await api.client.get("/v1/jobs", headers=globex)
    assert job not in {j["id"] for j in listed.json()["jobs"]}
    # And nothing was recorded: acme's job is as it was
    assert len(await api.deps.store.history(uuid.UUID(job))) == len(history)
    seen = await api.client.get(f"/v1/jobs/{job}", headers=acme)
    assert seen.status_code == 200 and seen.json()["tenant"] == "acme"
    assert (await api.client.get(f"/v1/jobs/{job}/events", headers=acme)).status_code == 200


async def test_lists_show_only_the_keys_tenant(api: Api) -> None:
    acme, globex = api.key("acme"), api.key("globex")
    ids = {
        tenant: {
            (await api.client.post("/v1/jobs", json=JOB, headers=key)).json()["id"]
            for _ in range(3)
        }
        for tenant, key in (("acme", acme), ("globex", globex))
    }
    # The projection is not running here: write the jobs' hashes as it would
    jobs = await api.deps.store.get_many([uuid.UUID(i) for s in ids.values() for i in s])
    await api.deps.view.put_jobs(jobs)
    for tenant, key in (("acme", acme), ("globex", globex)):
        for params in ({}, {"status": "SCHEDULED"}, {"type": "cpu.hash"}):
            page = (await api.client.get("/v1/jobs", params=params, headers=key)).json()
            assert {j["id"] for j in page["jobs"]} == ids[tenant], (tenant, params)
            assert {j["tenant"] for j in page["jobs"]} == {tenant}


async def test_idempotency_keys_are_per_tenant_and_the_actor_is_the_key(api: Api) -> None:
    acme, globex = api.key("acme"), api.key("globex")
    same = {"Idempotency-Key": "order-42", "X-Principal": "mallory"}
    first = await api.client.post("/v1/jobs", json=JOB, headers=acme | same)
    other = await api.client.post("/v1/jobs", json=JOB, headers=globex | same)
    again = await api.client.post("/v1/jobs", json=JOB, headers=acme | same)
    # Two tenants with the same key make two jobs; a repeat within a tenant meets its job
    assert first.status_code == other.status_code == 202
    assert first.json()["id"] != other.json()["id"]
    assert not first.json()["replayed"] and not other.json()["replayed"]
    assert again.json() == first.json() | {"replayed": True}
    # And globex cannot cancel acme's job by guessing its key
    assert (
        await api.client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=globex)
    ).status_code == 404
    # And each event names the key that caused it, never the X-Principal header
    for answer, key, tenant in ((first, acme, "acme"), (other, globex, "globex")):
        events = await api.deps.store.history(uuid.UUID(answer.json()["id"]))
        assert {e.actor for e in events} == {actor_of(key, tenant)}
        submitted = events[0]
        assert isinstance(submitted, Job.Submitted) and submitted.tenant == tenant


async def test_a_revoked_key_stops_working_within_a_second(api: Api) -> None:
    key = issue_key(api.url, api.deps.keys, "acme", ("read",))

    async def refresh() -> None:
        def read(conn: Any) -> int:
            return api.deps.keys.refresh(conn)

        await api.deps.store.run_sync(on_connection, api.deps.store.store, read)

    refreshing = asyncio.create_task(refresh_keys(api.deps.keys, refresh, 0.5))
    try:
        assert (await api.client.get("/v1/jobs", headers=bearer(key))).status_code == 200
        with psycopg.connect(api.url, autocommit=True) as conn:
            keys.revoke_key(conn, key.split("_")[1])
        revoked_at = time.monotonic()
        while (await api.client.get("/v1/jobs", headers=bearer(key))).status_code == 200:
            assert time.monotonic() - revoked_at < 1.5, "the revoked key still works"
            await asyncio.sleep(0.05)
        assert time.monotonic() - revoked_at < 1.5
    finally:
        refreshing.cancel()


async def test_anonymous_access_only_when_the_development_setting_gives_a_principal(
    api: Api,
) -> None:
    assert (await api.client.get("/v1/jobs")).status_code == 401
    api.deps.anonymous = keys.Principal("anonymous", "dev", frozenset(keys.SCOPES))
    answer = await api.client.post("/v1/jobs", json=JOB)
    assert answer.status_code == 202
    events = await api.deps.store.history(uuid.UUID(answer.json()["id"]))
    assert events[0].actor == "key:anonymous@dev"
    # a key, when sent, is still checked
    assert (await api.client.get("/v1/jobs", headers=bearer("jt_nope"))).status_code == 401


async def test_a_bus_submission_belongs_to_the_tenant_its_message_names(api: Api) -> None:
    from contracts.messages import SubmitJobMessage
    from services.submitter import handlers
    from shared.domain import Cause, job_id_for_key

    body = {"correlation_id": "c", "data": JOB | {"idempotency_key": "k-1"}, "tenant": "acme"}
    message = SubmitJobMessage.model_validate(body)
    cause = Cause("bus:test", message.correlation_id, str(message.message_id))
    submission = handlers.prepare(
        message.data, registry, api.deps.queues, cause, tenant=message.tenant
    )
    job, _ = await handlers.submit(api.deps.store, submission)
    assert job.tenant == "acme" and job.id == job_id_for_key("k-1", "acme")
    assert job.id != job_id_for_key("k-1")
    # and the acme key reads it; another tenant's does not
    assert (await api.client.get(f"/v1/jobs/{job.id}", headers=api.key("acme"))).status_code == 200
    assert (await api.client.get(f"/v1/jobs/{job.id}", headers=api.key("b"))).status_code == 404


async def test_a_key_over_its_rate_gets_429_with_retry_after(api: Api) -> None:
    from shared.ratelimit import RateLimiter

    api.deps.rate_limit = RateLimiter(per_s=1, burst=2).check
    fast, other = api.key("acme"), api.key("acme")
    answers = [(await api.client.get("/v1/jobs", headers=fast)).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    limited = await api.client.get("/v1/jobs", headers=fast)
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    # another key has its own bucket
    assert (await api.client.get("/v1/jobs", headers=other)).status_code == 200


async def test_a_tenant_over_its_pending_cap_gets_429_and_nothing_is_written(api: Api) -> None:
    from services.submitter.admission import PendingCap
    from shared.domain import job_id_for_key
    from shared.domain.errors import JobNotFoundError

    api.deps.pending_cap = PendingCap(api.deps.view, cap=3, refresh_s=0.0)
    acme, globex = api.key("acme"), api.key("globex")
    # Given three jobs of acme not yet final, counted by the projection (not running here: their
    # hashes are written as it would)
    posted = [await api.client.post("/v1/jobs", json=JOB, headers=acme) for _ in range(3)]
    assert [p.status_code for p in posted] == [202] * 3
    jobs = await api.deps.store.get_many([uuid.UUID(p.json()["id"]) for p in posted])
    await api.deps.view.put_jobs(jobs)
    # When acme submits one more, alone or in a batch
    one = await api.client.post("/v1/jobs", json=JOB | {"idempotency_key": "over"}, headers=acme)
    batch = await api.client.post("/v1/jobs/batch", json={"jobs": [JOB]}, headers=acme)
    # Then both are 429 with Retry-After, naming the tenant, and nothing is written
    for refused in (one, batch):
        assert_problem(refused, 429)
        assert refused.headers["retry-after"] == "30" and "acme" in refused.json()["detail"]
    with pytest.raises(JobNotFoundError):
        await api.deps.store.get(job_id_for_key("over", "acme"))
    # And another tenant is not held back
    assert (await api.client.post("/v1/jobs", json=JOB, headers=globex)).status_code == 202


async def test_metrics_are_the_installations_only_for_the_default_tenants_admins(api: Api) -> None:
    assert (await api.client.get("/metrics", headers=api.key("default"))).status_code == 200
    other = await api.client.get("/metrics", headers=api.key("acme"))
    assert assert_problem(other, 403)["scope"] == "admin"


async def test_the_pending_cap_asks_a_failing_redis_at_most_once_per_refresh(api: Api) -> None:
    from services.submitter.admission import PendingCap

    class Down:
        calls = 0

        async def tenant_count(self, tenant: str, statuses: Any) -> int:
            Down.calls += 1
            raise ConnectionError("Redis does not answer")

    cap = PendingCap(Down(), cap=10, refresh_s=60)  # type: ignore[arg-type]
    for _ in range(5):
        await cap.admit("acme")
    assert Down.calls == 1
