"""``POST /v1/jobs`` and ``GET /v1/jobs/{id}`` answer the same, byte for byte, whether their fast
path (media.SubmitRoute, media.ReadRoute) or FastAPI's generic path serves them: every request
here is sent down both and the answers are compared whole (status, headers, body; only a new
job's id differs). The real FastAPI app over
real PostgreSQL and Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.submitter.app import create_app
from services.submitter.deps import Deps
from services.submitter.media import FastRoute, ReadRoute, SubmitRoute
from shared.eventstore import AsyncJobStore, JobStore
from shared.jobtypes import registry
from shared.redis_view import RedisView
from shared.settings import RedisSettings, StoreSettings
from tests.api import bearer, issue_key

Answer = tuple[int, list[tuple[str, str]], bytes]
Api = tuple[httpx.AsyncClient, SubmitRoute, ReadRoute, Deps]


@pytest.fixture
async def api(
    store_settings: StoreSettings, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, SubmitRoute, ReadRoute, Deps]]:
    registry.load(["examples.jobs"])
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=f"jt-fp-{uuid.uuid4().hex}"))
    async with AsyncJobStore(JobStore(store_settings)) as store:
        app = create_app()
        deps = Deps(store, view, registry, {"default", "cpu", "io"})
        headers = bearer(issue_key(store_settings.postgres_url, deps.keys))
        app.state.deps = deps
        submit = next(r for r in app.router.routes if isinstance(r, SubmitRoute))
        read = next(r for r in app.router.routes if isinstance(r, ReadRoute))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://jobtrail", headers=headers
        ) as client:
            yield client, submit, read, deps
    await view.aclose()


@pytest.fixture
def fast_answers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the answers the fast path builds."""
    answered: list[int] = []
    answer = SubmitRoute.answer

    async def counted(self: FastRoute, *args: Any, **values: Any) -> Any:
        answered.append(1)
        return await answer(self, *args, **values)

    monkeypatch.setattr(FastRoute, "answer", counted)
    return answered


async def send(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None
) -> Answer:
    """POSTs ``body``; the answer with the new job's id (if any) replaced by ``<id>``."""
    sent = {"content-type": "application/json", "x-request-id": "fast-path-test"}
    response = await client.post("/v1/jobs", content=body, headers=sent | (headers or {}))
    content = response.content
    job_id = ""
    if response.status_code == 202:
        job_id = response.json()["id"]
        content = content.replace(job_id.encode(), b"<id>")
    fields = [(k, v.replace(job_id, "<id>") if job_id else v) for k, v in response.headers.items()]
    return response.status_code, fields, content


async def both(
    client: httpx.AsyncClient,
    route: SubmitRoute,
    body: bytes,
    headers: dict[str, str] | None = None,
    generic_headers: dict[str, str] | None = None,
) -> tuple[Answer, Answer]:
    """The fast path's answer and FastAPI's generic path's answer to the same request (with
    ``generic_headers`` instead of ``headers`` for the second when given)."""
    fast = await send(client, body, headers)
    route.fast = False
    try:
        generic = await send(client, body, generic_headers or headers)
    finally:
        route.fast = True
    return fast, generic


def new_key() -> str:
    return f"fp-{uuid.uuid4()}"


def accepted() -> list[Any]:
    """Requests the fast path answers itself: the model accepts the body."""
    return [
        pytest.param({"type": "cpu.hash", "payload": {"text": "x"}}, id="plain"),
        pytest.param({"type": "noop"}, id="no payload"),
        pytest.param(
            {"type": "cpu.hash", "payload": {"text": "x"}, "priority": 9, "max_attempts": 7},
            id="priority and attempts",
        ),
        pytest.param({"type": "noop", "priority": "3", "timeout_s": "2.5"}, id="numbers as text"),
        pytest.param({"type": "noop", "priority": 3.0}, id="an integral float"),
        pytest.param({"type": "noop", "run_at": "2001-01-01T00:00:00Z"}, id="run_at in the past"),
        pytest.param({"type": "noop", "queue": "io"}, id="another queue"),
        pytest.param({"type": "noop", "payload": {"big": 10**40, "f": 1e308}}, id="big numbers"),
        pytest.param({"type": "noop", "payload": {"é": "ünïcødé ☃ 𝄞"}}, id="unicode"),
        pytest.param({"type": "no.such.type"}, id="an unknown type (the handler refuses it)"),
        pytest.param({"type": "cpu.hash", "payload": {"text": 5}}, id="a payload the type refuses"),
        pytest.param({"type": "noop", "queue": "nowhere"}, id="an unknown queue"),
    ]


@pytest.mark.parametrize("job", accepted())
async def test_an_accepted_body_answers_the_same_on_both_paths(
    api: Api, fast_answers: list[int], job: dict[str, Any]
) -> None:
    client, route, _, _ = api
    # When the same request is sent down the fast path and down FastAPI's path
    fast, generic = await both(client, route, json.dumps(job).encode())

    # Then the fast path served the first, and both answers are the same, headers included
    assert fast_answers == [1]
    assert fast == generic


async def test_a_replayed_idempotency_key_answers_the_same_on_both_paths(
    api: Api, fast_answers: list[int]
) -> None:
    client, route, _, _ = api
    body = json.dumps({"type": "noop", "idempotency_key": new_key()}).encode()
    first = await send(client, body)
    # When a key already used is sent again down both paths
    fast, generic = await both(client, route, body)
    # Then both answer the first job, marked as a replay
    assert fast_answers == [1, 1]
    assert fast == generic
    assert fast[0] == 202 and b'"replayed":true' in fast[2] and first[2] != fast[2]
    assert ("idempotent-replayed", "true") in fast[1]
    # And the same key with another request is 409 on both paths
    other = json.dumps({"type": "noop", "priority": 1, "idempotency_key": new_key()}).encode()
    await send(client, other)
    fast, generic = await both(client, route, other.replace(b'"priority": 1', b'"priority": 2'))
    assert fast == generic and fast[0] == 409


REFUSED = [
    pytest.param(b"", id="an empty body"),
    pytest.param(b"{", id="truncated JSON"),
    pytest.param(b"[]", id="a list"),
    pytest.param(b'{"payload": {}}', id="no type"),
    pytest.param(b'{"type": "noop", "colour": "red"}', id="an unknown field"),
    pytest.param(b'{"type": "noop", "priority": 10}', id="priority out of range"),
    pytest.param(b'{"type": "noop", "priority": true}', id="priority as a boolean"),
    pytest.param(b'{"type": "noop", "run_at": "1970-01-01T00:00:00Z"}', id="run_at too early"),
    pytest.param(b'{"type": "noop", "run_at": "2030-01-01T00:00:00"}', id="run_at without zone"),
    pytest.param(b'{"type": "noop", "payload": {"t": "\\ud800"}}', id="a lone surrogate"),
    pytest.param(b'{"type": "noop", "payload": {"x": NaN}}', id="NaN"),
    pytest.param(b'{"type": "noop", "payload": {"x": Infinity}}', id="Infinity"),
    pytest.param(b'{"type": "noop", "type": "cpu.hash"}', id="a duplicate key"),
    pytest.param(b'\xef\xbb\xbf{"type": "noop"}', id="a UTF-8 byte order mark"),
    pytest.param('{"type": "noop"}'.encode("utf-16"), id="UTF-16"),
    pytest.param(b'{"type": "noop", "payload": {"t": "\xff"}}', id="invalid UTF-8"),
    pytest.param(b'{"type": "noop", "payload": ' + b'{"a": ' * 40 + b"1" + b"}" * 41, id="deep"),
]


@pytest.mark.parametrize("body", REFUSED)
async def test_a_body_the_model_refuses_or_reads_its_own_way_answers_the_same(
    api: Api, fast_answers: list[int], body: bytes
) -> None:
    client, route, _, _ = api
    # When an unusual body is sent with the fast path on and off
    fast, generic = await both(client, route, body)
    # Then both answers are the same, byte for byte
    assert fast == generic


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"idempotency-key": "k-header"}, id="an Idempotency-Key header"),
        pytest.param({"content-type": "text/plain"}, id="text/plain (415)"),
        pytest.param({"content-type": "application/merge-patch+json"}, id="a +json type"),
        pytest.param({"content-type": "application/json; charset=utf-8"}, id="with a charset"),
        pytest.param({"x-request-id": "bad id with spaces"}, id="a bad X-Request-Id"),
    ],
)
async def test_unusual_headers_answer_the_same_on_both_paths(
    api: Api, fast_answers: list[int], headers: dict[str, str]
) -> None:
    client, route, _, _ = api
    second = None
    if "idempotency-key" in headers:  # a new job each time: the ids differ, not the answers
        headers, second = {"idempotency-key": new_key()}, {"idempotency-key": new_key()}
    fast, generic = await both(client, route, b'{"type": "noop"}', headers, second)
    assert fast == generic
    if "charset" in headers.get("content-type", ""):
        assert fast_answers == [1]  # a charset parameter still takes the fast path


async def read(client: httpx.AsyncClient, route: ReadRoute, path: str) -> tuple[Answer, Answer]:
    """``GET path`` with the fast path on, then off."""
    answers = []
    for fast in (True, False):
        route.fast = fast
        try:
            response = await client.get(path, headers={"x-request-id": "fast-path-test"})
        finally:
            route.fast = True
        answers.append((response.status_code, list(response.headers.items()), response.content))
    return answers[0], answers[1]


async def test_a_status_read_answers_the_same_on_both_paths(
    api: Api, fast_answers: list[int]
) -> None:
    client, _, route, deps = api
    body = {"type": "cpu.hash", "payload": {"text": "x"}, "idempotency_key": new_key()}
    job_id = (await client.post("/v1/jobs", json=body)).json()["id"]
    fast_answers.clear()

    # When a job that Redis does not hold yet is read down both paths
    fast, generic = await read(client, route, f"/v1/jobs/{job_id}")
    # Then the fast path served it from the log, and both answers are the same
    assert fast_answers == [1]
    assert fast == generic and b'"source":"log"' in fast[2]

    # And once Redis holds it (with progress), both answer it from Redis the same way
    await deps.view.put_jobs([await deps.store.get(uuid.UUID(job_id))])
    await deps.view.set_progress(uuid.UUID(job_id), 0.5, "half way")
    fast, generic = await read(client, route, f"/v1/jobs/{job_id}")
    assert fast_answers == [1, 1]
    assert fast == generic and b'"source":"cache"' in fast[2] and b"half way" in fast[2]


async def test_an_unknown_job_answers_404_the_same_on_both_paths(
    api: Api, fast_answers: list[int]
) -> None:
    client, _, route, _ = api
    fast, generic = await read(client, route, f"/v1/jobs/{uuid.uuid4()}")
    assert fast_answers == [1]
    assert fast == generic and fast[0] == 404


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param("not-a-uuid", id="not a UUID"),
        pytest.param(str(uuid.uuid4()).upper(), id="upper case"),
        pytest.param(uuid.uuid4().hex, id="no dashes"),
        pytest.param(f"{{{uuid.uuid4()}}}", id="braces"),
        pytest.param(f"{uuid.uuid4()}?version=0", id="version out of range"),
        pytest.param(f"{uuid.uuid4()}?version=1", id="a version"),
        pytest.param(f"{uuid.uuid4()}?at=2020-01-01T00:00:00", id="at without zone"),
        pytest.param(f"{uuid.uuid4()}?at=2020-01-01T00:00:00Z&version=1", id="at and version"),
    ],
)
async def test_unusual_reads_take_fastapis_path_and_answer_the_same(
    api: Api, fast_answers: list[int], tail: str
) -> None:
    client, _, route, _ = api
    fast, generic = await read(client, route, f"/v1/jobs/{tail}")
    assert fast_answers == []
    assert fast == generic
