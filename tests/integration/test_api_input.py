"""Bad input the API must name: run_at out of range, a body that is not JSON, a method the path
does not answer to, a head over the limit; and a 503 keeps its Retry-After. The real FastAPI app
over real PostgreSQL and Redis; nothing is written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import HTTPException

from services.submitter.app import create_app
from services.submitter.deps import Deps
from shared.eventstore import AsyncJobStore, JobStore
from shared.jobtypes import registry
from shared.redis_view import RedisView
from shared.settings import RedisSettings, StoreSettings
from tests.api import assert_problem, bearer, issue_key, served
from tests.jobs import zulu
from tests.processes import free_port


@pytest.fixture
async def api(
    store_settings: StoreSettings, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Deps]]:
    """The submitter's app with real stores (no broker: these requests need none)."""
    async with served(store_settings, redis_url) as api:

        @api.app.get("/test/unavailable")
        async def unavailable() -> None:
            raise HTTPException(503, "down for a moment", headers={"Retry-After": "7"})

        yield api.client, api.deps


HORIZON_DAYS = 366  # run_at at most this far ahead (contracts.messages.RUN_AT_HORIZON)


def far(days: float) -> str:
    return zulu(datetime.now(UTC) + timedelta(days=days))


OUT_OF_RANGE = [
    pytest.param("9999-12-31T23:59:59-14:00", id="year 9999 at -14:00 (year 10000 in UTC)"),
    pytest.param("9999-12-31T00:00:00Z", id="year 9999"),
    pytest.param(far(HORIZON_DAYS + 1), id="one day past the horizon"),
    pytest.param("0001-01-01T00:00:00+14:00", id="year 0001 at +14:00 (year 0 in UTC)"),
    pytest.param("0001-01-01T00:00:00Z", id="year 0001"),
    pytest.param("1970-01-01T00:00:00Z", id="the Unix epoch"),
]


@pytest.mark.parametrize("run_at", OUT_OF_RANGE)
async def test_run_at_out_of_range_is_422_naming_run_at_and_writes_nothing(
    api: tuple[httpx.AsyncClient, Deps], run_at: str
) -> None:
    client, deps = api
    before = await deps.store.run_sync(deps.store.store.max_notification_id)
    job = {"type": "cpu.hash", "payload": {"text": "x"}, "run_at": run_at}

    # When a job is submitted with it, alone and in a batch
    single = await client.post("/v1/jobs", json=job)
    batch = await client.post("/v1/jobs/batch", json={"jobs": [job]})

    # Then the job is refused naming run_at, and the bound in the message
    body = assert_problem(single, 422)
    assert [e["field"] for e in body["errors"]] == ["run_at"]
    assert "2000-01-01" in body["detail"] or "366 days ahead" in body["detail"]
    assert batch.status_code == 202, batch.text
    [item] = batch.json()
    assert item["id"] is None and [e["field"] for e in item["errors"]] == ["run_at"]
    # And nothing was written
    assert await deps.store.run_sync(deps.store.store.max_notification_id) == before


async def test_run_at_within_range_is_accepted(api: tuple[httpx.AsyncClient, Deps]) -> None:
    client, deps = api
    for run_at in ("2001-02-03T04:05:06Z", far(1), far(HORIZON_DAYS - 1)):
        response = await client.post(
            "/v1/jobs", json={"type": "cpu.hash", "payload": {"text": "x"}, "run_at": run_at}
        )
        assert response.status_code == 202, response.text
        job = await deps.store.get(uuid.UUID(response.json()["id"]))
        assert job.run_at == datetime.fromisoformat(run_at)


BODIES = [
    ("POST", "/v1/jobs"),
    ("POST", "/v1/jobs/batch"),
    ("POST", f"/v1/jobs/{uuid.uuid4()}/cancel"),
]
NOT_JSON = [
    ("text/plain", b'{"type": "cpu.hash", "payload": {"text": "x"}}'),
    ("application/x-www-form-urlencoded", b"type=cpu.hash&payload=x"),
    ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="type"'),
    ("application/xml", b"<job/>"),
    (None, b'{"type": "cpu.hash", "payload": {"text": "x"}}'),
]


@pytest.mark.parametrize(("method", "path"), BODIES)
@pytest.mark.parametrize(("content_type", "content"), NOT_JSON)
async def test_a_body_that_is_not_json_is_415_saying_what_is_expected(
    api: tuple[httpx.AsyncClient, Deps],
    method: str,
    path: str,
    content_type: str | None,
    content: bytes,
) -> None:
    client, deps = api
    before = await deps.store.run_sync(deps.store.store.max_notification_id)
    headers = {"content-type": content_type} if content_type else {}
    response = await client.request(method, path, content=content, headers=headers)
    body = assert_problem(response, 415)
    assert "application/json" in body["detail"] and (content_type or "(none)") in body["detail"]
    assert body["expected"] == "application/json"
    assert [e["field"] for e in body["errors"]] == ["header.content-type"]
    assert response.headers["accept-post"] == "application/json"
    assert await deps.store.run_sync(deps.store.store.max_notification_id) == before


async def test_json_bodies_and_an_empty_cancel_body_are_still_read(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    client, _ = api
    job = b'{"type": "cpu.hash", "payload": {"text": "x"}}'
    for content_type in ("application/json", "application/json; charset=utf-8"):
        headers = {"content-type": content_type}
        response = await client.post("/v1/jobs", content=job, headers=headers)
        assert response.status_code == 202, (content_type, response.text)
    job_id = response.json()["id"]
    # A cancel without a body, whatever the client says its type is, is a cancel
    cancel = await client.post(f"/v1/jobs/{job_id}/cancel", headers={"content-type": "text/plain"})
    assert cancel.status_code == 202, cancel.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/jobs", "GET, POST"),
        ("PUT", f"/v1/jobs/{uuid.uuid4()}", "GET"),
        ("GET", f"/v1/jobs/{uuid.uuid4()}/cancel", "POST"),
        ("DELETE", "/v1/jobs/batch", "POST"),  # not GET /v1/jobs/{job_id}
        ("GET", "/v1/jobs/batch", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_405_names_every_allowed_method(
    api: tuple[httpx.AsyncClient, Deps], method: str, path: str, allow: str
) -> None:
    client, _ = api
    response = await client.request(method, path)
    assert_problem(response, 405)
    assert response.headers["allow"] == allow


async def test_a_503_keeps_its_retry_after(api: tuple[httpx.AsyncClient, Deps]) -> None:
    client, _ = api
    response = await client.get("/test/unavailable")
    assert assert_problem(response, 503)["detail"] == "down for a moment"
    assert response.headers["retry-after"] == "7"


async def test_a_head_over_the_limit_is_414_or_431_however_it_arrived(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # The server bounds a head that arrives in pieces; a whole one is bounded by the app
    client, _ = api
    long_url = await client.get(f"/v1/jobs/{uuid.uuid4()}", params={"pad": "p" * 20_000})
    many_headers = await client.get("/healthz", headers={f"X-H{i}": "h" * 1000 for i in range(40)})
    assert "16384 bytes" in assert_problem(long_url, 414)["detail"]
    assert "16384 bytes" in assert_problem(many_headers, 431)["detail"]
    fits = await client.get(f"/v1/jobs/{uuid.uuid4()}", params={"pad": "p" * 10_000})
    assert fits.status_code == 404


async def test_the_openapi_document_names_415_where_a_body_is_read(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    client, _ = api
    paths = (await client.get("/openapi.json")).json()["paths"]
    with_415 = {
        (method, path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "415" in operation["responses"]
    }
    assert with_415 == {
        ("post", "/v1/bulk/cancel"),
        ("post", "/v1/bulk/requeue"),
        ("post", "/v1/jobs"),
        ("post", "/v1/jobs/batch"),
        ("post", "/v1/jobs/{job_id}/cancel"),
        ("post", "/v1/jobs/{job_id}/requeue"),
    }


async def test_empty_id_headers_count_as_absent(api: tuple[httpx.AsyncClient, Deps]) -> None:
    client, deps = api
    # Given a submission whose X-Request-Id and X-Correlation-Id headers are present but empty
    headers = {"X-Request-Id": "", "X-Correlation-Id": ""}
    # When it is sent
    response = await client.post(
        "/v1/jobs", json={"type": "cpu.hash", "payload": {"text": "e"}}, headers=headers
    )
    # Then it is accepted with generated ids, recorded in its Submitted event
    assert response.status_code == 202, response.text
    generated = response.headers["X-Request-Id"]
    assert generated
    submitted, *_ = await deps.store.history(uuid.UUID(response.json()["id"]))
    assert (submitted.causation_id, submitted.correlation_id) == (generated, generated)


async def test_a_list_while_redis_is_away_is_a_503_with_retry_after(
    store_settings: StoreSettings,
) -> None:
    """The list is read from Redis alone: when Redis does not answer, a 503 the client can retry
    (found by tests/e2e/test_schemathesis.py while another test stopped Redis: it was a 500)."""
    registry.load(["examples.jobs"])
    nobody = free_port()  # nothing listens there
    view = RedisView(RedisSettings(redis_url=f"redis://127.0.0.1:{nobody}/0", redis_prefix="jt"))
    async with AsyncJobStore(JobStore(store_settings)) as store:
        deps = Deps(store, view, registry, {"default"})
        headers = bearer(issue_key(store_settings.postgres_url, deps.keys))
        app = create_app()
        app.state.deps = deps
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://jobtrail", headers=headers
        ) as client:
            response = await client.get("/v1/jobs")
    await view.aclose()
    assert "Redis" in assert_problem(response, 503)["detail"]
    assert response.headers["retry-after"] == "5"


async def test_readiness_probes_ping_the_servers_at_most_once_a_second(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # /readyz needs no key: a flood of probes must not become a flood of pings
    client, deps = api
    pings = 0
    ping = deps.view.redis.ping

    async def counted() -> Any:
        nonlocal pings
        pings += 1
        return await ping()

    deps.view.redis.ping = counted  # type: ignore[method-assign]
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
    answers += [await client.get("/readyz") for _ in range(20)]
    assert {a.json()["checks"]["redis"] for a in answers} == {"ok"}
    assert pings == 1
    await asyncio.sleep(1.1)
    await client.get("/readyz")
    assert pings == 2
