"""What the clients send and how they read the answers, apart from any I/O: ``Client`` and
``AsyncClient`` build the same ``Call`` for each operation, retry it under the same
``RetryPolicy`` and read its answer the same way; only how they send it differs."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, TypeVar, Unpack

import httpx
from pydantic import BaseModel, TypeAdapter
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from contracts.api import JobView
from contracts.messages import SubmitJob
from jobtrail.errors import (
    JobCancelledError,
    JobFailedError,
    RetryLaterError,
    error_for,
)
from shared.jobtypes import UnknownJobTypeError, registry

T = TypeVar("T")

SERVER_MAX_WAIT_S = 60.0
"""The longest wait ``GET /v1/jobs/{id}/wait`` accepts; a longer ``wait`` asks again."""
WAIT_READ_MARGIN_S = 10.0
"""How much longer than the wait it asked the client waits for the answer."""
QUICK_ANSWER_S = 0.5
"""A wait answered sooner than this without the job having ended is followed by a pause (the
fallback's backoff), so a server that does not hold the request is never polled in a loop."""

REFUSED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""The request was never sent: sending it again is always safe."""
UNANSWERED = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
"""It may have been acted on: sent again only when that cannot act twice (a read, or a
submission, which carries its idempotency key)."""


@dataclass(frozen=True)
class Call:
    """One request of an operation."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    timeout: float | None = None
    """Seconds for this request, None for the client's own."""
    repeatable: bool = True
    """Whether an unanswered request may be sent again (it cannot act twice)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a refused request (429, 503, no connection) and of an unanswered repeatable
    one (a read, a submission with its idempotency key): at most ``attempts`` sends, waiting
    Retry-After when the answer says it, else ``first_delay_s`` doubling, jittered, up to
    ``max_delay_s``."""

    attempts: int = 5
    first_delay_s: float = 0.2
    max_delay_s: float = 5.0
    sleep: Callable[[float], Any] | None = field(default=None, compare=False)
    """How to pause (tests); None: tenacity's own (time.sleep or asyncio.sleep)."""

    def should_retry(self, call: Call) -> Callable[[BaseException], bool]:
        def retry(exc: BaseException) -> bool:
            if isinstance(exc, (RetryLaterError, *REFUSED)):
                return True
            return call.repeatable and isinstance(exc, UNANSWERED)

        return retry

    def delay(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RetryLaterError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_delay_s)
        backoff: float = self.first_delay_s * 2.0 ** (state.attempt_number - 1)
        return min(backoff, self.max_delay_s) * random.uniform(0.5, 1.0)

    def options(self, call: Call) -> dict[str, Any]:
        """tenacity's ``Retrying`` / ``AsyncRetrying`` arguments for ``call``."""
        options: dict[str, Any] = {
            "stop": stop_after_attempt(max(1, self.attempts)),
            "wait": self.delay,
            "retry": retry_if_exception(self.should_retry(call)),
            "reraise": True,
        }
        if self.sleep is not None:
            options["sleep"] = self.sleep
        return options


def default_url() -> str:
    """``JOBTRAIL_API_URL``, else the submitter's default address."""
    return os.environ.get("JOBTRAIL_API_URL", "http://127.0.0.1:8080")


def client_options(
    url: str | None, api_key: str | None, timeout: float, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """httpx's arguments for either client: the key from ``JOBTRAIL_API_KEY`` when not given."""
    key = api_key if api_key is not None else os.environ.get("JOBTRAIL_API_KEY", "")
    sent = dict(headers or {}) | ({"Authorization": f"Bearer {key}"} if key else {})
    return {"base_url": url or default_url(), "timeout": timeout, "headers": sent}


def new_idempotency_key() -> str:
    """A key for a submission the caller gave none: its retries then meet the first job."""
    return f"client-{uuid.uuid4()}"


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class SubmitOptions(TypedDict, total=False):
    """What a submission may say besides its type and payload (the job type's defaults fill
    the rest): one list for every ``submit`` of both clients and of a bound job type."""

    idempotency_key: str | None
    run_at: datetime | str | None
    priority: int | None
    max_attempts: int | None
    timeout_s: float | None
    queue: str | None


def job_body(
    job_type: str,
    payload: BaseModel | Mapping[str, Any] | None = None,
    **options: Unpack[SubmitOptions],
) -> dict[str, Any]:
    """The body of ``POST /v1/jobs``, with an idempotency key (a new one when none is given)."""
    body: dict[str, Any] = {
        "type": job_type,
        "payload": _plain(payload) if payload is not None else {},
        "idempotency_key": options.get("idempotency_key") or new_idempotency_key(),
    }
    optional = {name: _plain(value) for name, value in options.items()}
    optional.pop("idempotency_key", None)
    return body | {name: value for name, value in optional.items() if value is not None}


def batch_body(jobs: Iterable[SubmitJob | Mapping[str, Any]]) -> dict[str, Any]:
    """The body of ``POST /v1/jobs/batch``: each job with an idempotency key."""
    bodies = []
    for job in jobs:
        body = job.model_dump(mode="json", exclude_none=True) if isinstance(job, SubmitJob) else {}
        if not isinstance(job, SubmitJob):
            body = {name: _plain(value) for name, value in job.items() if value is not None}
        body.setdefault("idempotency_key", new_idempotency_key())
        bodies.append(body)
    return {"jobs": bodies}


def state_params(at: datetime | str | None, version: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if at is not None:
        params["at"] = _plain(at)
    if version is not None:
        params["version"] = version
    return params


def wait_call(job_id: uuid.UUID | str, left: float) -> Call:
    """One long poll of at most ``left`` seconds (and at most the server's maximum)."""
    asked = max(0.0, min(left, SERVER_MAX_WAIT_S))
    return Call(
        "GET",
        f"/v1/jobs/{job_id}/wait",
        params={"timeout": round(asked, 3)},
        timeout=asked + WAIT_READ_MARGIN_S,
    )


def poll_delays(first: float = 0.1, cap: float = 2.0) -> Iterator[float]:
    """The pauses between reads of a wait without the long poll: doubling up to ``cap``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def checked(response: httpx.Response) -> httpx.Response:
    """The response when it is not an error answer; its typed ApiError otherwise."""
    if response.status_code >= 400:
        raise error_for(response)
    return response


def read(response: httpx.Response, kind: type[T]) -> T:
    """The answer's body as ``kind`` (a model, or a list of one)."""
    return TypeAdapter(kind).validate_json(response.content)


def result_of(job: JobView, model: type[T] | None = None) -> Any:
    """A COMPLETED job's result as ``model``, else as its type's registered result model (when
    this process imported the module declaring it), else as JSON; JobFailedError or
    JobCancelledError for a job that ended without one."""
    if job.status == "FAILED":
        raise JobFailedError(job)
    if job.status == "CANCELLED":
        raise JobCancelledError(job)
    if model is None:
        try:
            model = registry.get(job.type).result  # type: ignore[assignment]
        except UnknownJobTypeError:
            model = None
    if model is None:
        return job.result
    return TypeAdapter(model).validate_python(job.result)
