"""The Python client's own rules, against a stand-in server (httpx.MockTransport): each error
answer becomes its typed exception with the problem document; what is sent again, how often,
after how long, and with which body. tests/e2e/test_client.py runs it against the services."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from mypy import api as mypy_api

from jobtrail import (
    ApiError,
    Client,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    RetryPolicy,
    UnauthorizedError,
    UnavailableError,
)
from shared.jobtypes import UnknownJobTypeError

Handler = Callable[[httpx.Request], httpx.Response]
ACCEPTED = {"id": str(uuid.uuid4()), "status": "PENDING", "type": "noop", "version": 1}


def problem(status: int, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": "T", "status": status, "detail": "D", **extra}


def client(handler: Handler, sleeps: list[float] | None = None, attempts: int = 4) -> Client:
    policy = RetryPolicy(attempts=attempts, sleep=(sleeps if sleeps is not None else []).append)
    return Client("http://jobtrail", "jt_k_s", retry=policy, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "kind", "extra"),
    [
        (401, UnauthorizedError, {}),
        (403, ForbiddenError, {"scope": "submit"}),
        (404, NotFoundError, {}),
        (409, ConflictError, {"job_id": "x"}),
        (422, InvalidRequestError, {"errors": [{"field": "payload.text", "message": "m"}]}),
        (429, RateLimitedError, {}),
        (503, UnavailableError, {}),
        (500, ApiError, {}),
    ],
)
def test_each_error_answer_is_its_typed_exception_with_the_problem(
    status: int, kind: type[ApiError], extra: dict[str, Any]
) -> None:
    body = problem(status, **extra)
    headers = {"Retry-After": "7"}
    with (
        client(lambda _: httpx.Response(status, json=body, headers=headers), attempts=1) as c,
        pytest.raises(ApiError) as raised,
    ):
        c.get(uuid.uuid4())
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.problem) == (status, body)
    if isinstance(raised.value, RateLimitedError | UnavailableError):
        assert raised.value.retry_after == 7.0
    if isinstance(raised.value, InvalidRequestError):
        assert raised.value.fields == ["payload.text"]
    if isinstance(raised.value, ForbiddenError):
        assert raised.value.scope == "submit"


def test_a_refused_submission_is_sent_again_the_same_after_retry_after() -> None:
    bodies: list[dict[str, Any]] = []
    sleeps: list[float] = []

    def server(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) < 3:
            return httpx.Response(503, json=problem(503), headers={"Retry-After": "2"})
        return httpx.Response(202, json=ACCEPTED | {"replayed": False})

    with client(server, sleeps) as c:
        accepted = c.submit("noop", {})
    assert str(accepted.id) == ACCEPTED["id"]
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["idempotency_key"].startswith("client-")
    assert sleeps == [2.0, 2.0]  # Retry-After, under the policy's 5 s cap


def test_retries_are_bounded() -> None:
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(429, json=problem(429), headers={"Retry-After": "60"})

    sleeps: list[float] = []
    with client(server, sleeps, attempts=3) as c, pytest.raises(RateLimitedError):
        c.submit("noop", {})
    assert len(sent) == 3 and sleeps == [5.0, 5.0]  # Retry-After capped at max_delay_s


def test_an_invalid_request_is_never_sent_again() -> None:
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(422, json=problem(422, errors=[{"field": "type", "message": "m"}]))

    with client(server) as c, pytest.raises(InvalidRequestError):
        c.submit("nope", {})
    assert len(sent) == 1


@pytest.mark.parametrize(("method", "sends"), [("cancel", 1), ("get", 2), ("submit", 2)])
def test_only_what_cannot_act_twice_is_sent_again_after_an_unanswered_request(
    method: str, sends: int
) -> None:
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if len(sent) == 1:
            raise httpx.ReadTimeout("no answer", request=request)
        view = {"id": ACCEPTED["id"], "tenant": "t", "type": "noop", "status": "CANCELLED"}
        view |= {"attempt": 0, "max_attempts": 1, "version": 2, "queue": "default"}
        view |= {"priority": 5, "created_at": None, "updated_at": None, "source": "log"}
        return httpx.Response(202, json=view | {"replayed": True})

    with client(server) as c:
        call = {"cancel": c.cancel, "get": c.get, "submit": lambda j: c.submit("noop", {})}
        if sends == 1:
            with pytest.raises(httpx.ReadTimeout):
                call[method](ACCEPTED["id"])
        else:
            call[method](ACCEPTED["id"])
    assert len(sent) == sends


def test_a_function_that_is_no_job_type_cannot_be_bound() -> None:
    def not_registered(payload: Any) -> None: ...

    with client(lambda _: httpx.Response(500)) as c, pytest.raises(UnknownJobTypeError):
        c.job(not_registered)


TYPED_USE = """
from examples.jobs import HashIn, SleepIn, hash_text, sleep
from jobtrail.client import AsyncClient, Client

def blocking(client: Client) -> None:
    job = client.job(hash_text).submit(HashIn(text="x"))
    reveal_type(job.result().digest)
    client.job(hash_text).submit(SleepIn(seconds=1))

async def asynchronous(client: AsyncClient) -> None:
    job = await client.job(sleep).submit(SleepIn(seconds=1))
    reveal_type(await job.result())
"""


def test_a_bound_job_type_is_typed_by_its_payload_and_result_models(tmp_path: Any) -> None:
    # Given code that submits a job type with its payload model, and once with another model
    module = tmp_path / "typed_use.py"
    module.write_text(TYPED_USE)
    # When mypy (strict) checks it
    out, _, _ = mypy_api.run(["--strict", "--no-incremental", str(module)])
    # Then it knows the result models, and refuses the wrong payload model
    assert 'Revealed type is "str"' in out, out
    assert 'Revealed type is "examples.jobs.SleepOut"' in out, out
    assert 'incompatible type "SleepIn"; expected "HashIn"' in out, out
    assert out.count("error:") == 1, out
