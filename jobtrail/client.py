"""The Python client of jobtrail's HTTP API: ``Client`` (blocking) and ``AsyncClient``.

    from examples.jobs import HashIn, hash_text
    from jobtrail.client import Client

    with Client("http://127.0.0.1:8080", api_key="jt_...") as client:
        job = client.job(hash_text).submit(HashIn(text="hi"))  # typed by the payload model
        print(job.result(timeout=30).digest)                   # the result model, typed

Every error answer raises a typed ``ApiError`` carrying the problem document (jobtrail.errors).
A submission is sent with an idempotency key (a new one when the caller gives none) and sent
again with that same key when it is refused (429, 503, no connection) or unanswered (a timeout),
so a retry meets the job the first send created. ``wait`` long-polls ``GET /v1/jobs/{id}/wait``
and falls back to polling with backoff against a submitter without it. The client talks HTTP
only: it imports no service.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack, overload
from uuid import UUID

import httpx
from pydantic import BaseModel
from tenacity import Retrying

from contracts.api import ENDED, Accepted, BatchItem, EventView, JobView
from contracts.messages import SubmitJob
from jobtrail import calls
from jobtrail.aio import AsyncBoundJob, AsyncClient, AsyncJobHandle
from jobtrail.calls import Call, RetryPolicy, SubmitOptions, default_url
from jobtrail.errors import NotFoundError, WaitTimeoutError
from shared.jobtypes import JobContext, JobType, registry

__all__ = [
    "AsyncBoundJob",
    "AsyncClient",
    "AsyncJobHandle",
    "BoundJob",
    "Client",
    "JobHandle",
    "RetryPolicy",
    "default_url",
]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out")
M = TypeVar("M")
JobId = UUID | str


class Client:
    """A blocking client of the API; use it in a ``with`` block or ``close()`` it."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        options = calls.client_options(url, api_key, timeout, headers)
        self.http = httpx.Client(transport=transport, **options)
        self.long_poll = True
        """False once the server showed it has no wait endpoint: ``wait`` polls instead."""

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call) -> httpx.Response:
        """Sends ``call``, again under the retry policy; the answer, or its typed error."""

        def once() -> httpx.Response:
            timeout = call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT
            response = self.http.request(
                call.method, call.path, params=call.params, json=call.json, timeout=timeout
            )
            return calls.checked(response)

        return Retrying(**self.retry.options(call))(once)

    def submit(
        self,
        type: str,
        payload: BaseModel | Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptions],
    ) -> Accepted:
        """Submits a job (its type's defaults fill what is not given); ``replayed`` is true when
        the idempotency key met an earlier job."""
        body = calls.job_body(type, payload, **options)
        return calls.read(self.send(Call("POST", "/v1/jobs", json=body)), Accepted)

    def submit_many(self, jobs: Iterable[SubmitJob | Mapping[str, Any]]) -> list[BatchItem]:
        """Submits up to 1,000 jobs in one transaction; each item has the job's id or errors."""
        call = Call("POST", "/v1/jobs/batch", json=calls.batch_body(jobs))
        return calls.read(self.send(call), list[BatchItem])

    def get(self, job_id: JobId) -> JobView:
        """The job's current state."""
        return calls.read(self.send(Call("GET", f"/v1/jobs/{job_id}")), JobView)

    def state(
        self, job_id: JobId, *, at: datetime | str | None = None, version: int | None = None
    ) -> JobView:
        """The job as it was at time ``at`` (with a zone) or after its first ``version`` events,
        from the log."""
        call = Call("GET", f"/v1/jobs/{job_id}", params=calls.state_params(at, version))
        return calls.read(self.send(call), JobView)

    def events(self, job_id: JobId) -> list[EventView]:
        """The job's whole history, in version order."""
        return calls.read(self.send(Call("GET", f"/v1/jobs/{job_id}/events")), list[EventView])

    def cancel(self, job_id: JobId, reason: str | None = None) -> JobView:
        """Cancels the job (a running one stops when its worker acknowledges); ConflictError
        when it already ended."""
        body = {"reason": reason} if reason else None
        call = Call("POST", f"/v1/jobs/{job_id}/cancel", json=body, repeatable=False)
        return calls.read(self.send(call), JobView)

    def wait(self, job_id: JobId, timeout: float | None = None) -> JobView:
        """The job once it has ended (COMPLETED, FAILED, CANCELLED); WaitTimeoutError when it
        has not after ``timeout`` seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pauses = calls.poll_delays()
        while True:
            left = float("inf") if deadline is None else deadline - time.monotonic()
            started = time.monotonic()
            job = self._long_poll(job_id, left) if self.long_poll else self.get(job_id)
            if job.status in ENDED:
                return job
            left = float("inf") if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(job, timeout or 0.0)
            if time.monotonic() - started < calls.QUICK_ANSWER_S:
                time.sleep(min(next(pauses), left))

    def _long_poll(self, job_id: JobId, left: float) -> JobView:
        try:
            return calls.read(self.send(calls.wait_call(job_id, left)), JobView)
        except NotFoundError:
            job = self.get(job_id)  # NotFoundError again when there is no such job
            self.long_poll = False  # the job is there, the wait endpoint is not: poll
            return job

    @overload
    def result(self, job_id: JobId, model: type[M], *, timeout: float | None = None) -> M: ...
    @overload
    def result(self, job_id: JobId, model: None = None, *, timeout: float | None = None) -> Any: ...
    def result(
        self, job_id: JobId, model: type[Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """The job's result once it has ended, as ``model`` or its type's result model (when
        its module is imported here), else JSON. JobFailedError / JobCancelledError when it
        ended without one, WaitTimeoutError after ``timeout`` seconds."""
        return calls.result_of(self.wait(job_id, timeout), model)

    @overload
    def job(self, fn: Callable[[In, JobContext], Awaitable[Out]]) -> BoundJob[In, Out]: ...
    @overload
    def job(self, fn: Callable[[In], Awaitable[Out]]) -> BoundJob[In, Out]: ...
    @overload
    def job(self, fn: Callable[[In, JobContext], Out]) -> BoundJob[In, Out]: ...
    @overload
    def job(self, fn: Callable[[In], Out]) -> BoundJob[In, Out]: ...
    def job(self, fn: Callable[..., Any]) -> BoundJob[Any, Any]:
        """A registered job type (the function ``@job_type`` decorated) bound to this client:
        ``client.job(hash_text).submit(HashIn(text="hi"))``, typed by its payload and result."""
        return BoundJob(self, registry.of(fn))


class BoundJob(Generic[In, Out]):
    """A job type bound to a client: submissions typed by its payload model."""

    def __init__(self, client: Client, job_type: JobType) -> None:
        self.client, self.job_type = client, job_type

    def submit(
        self,
        payload: In,
        **options: Unpack[SubmitOptions],
    ) -> JobHandle[Out]:
        """Submits one job of this type (Celery's ``delay``); the handle waits for its result."""
        accepted = self.client.submit(self.job_type.name, payload, **options)
        return JobHandle(self.client, self.job_type, accepted)


class JobHandle(Generic[Out]):
    """A submitted job: its id, and its state, wait and typed result."""

    def __init__(self, client: Client, job_type: JobType, accepted: Accepted) -> None:
        self.client, self.job_type, self.accepted = client, job_type, accepted
        self.id = accepted.id

    def get(self) -> JobView:
        return self.client.get(self.id)

    def wait(self, timeout: float | None = None) -> JobView:
        return self.client.wait(self.id, timeout)

    def result(self, timeout: float | None = None) -> Out:
        """The result as the type's result model (``Out``); see ``Client.result``."""
        value: Out = calls.result_of(self.client.wait(self.id, timeout), self.job_type.result)
        return value

    def cancel(self, reason: str | None = None) -> JobView:
        return self.client.cancel(self.id, reason)
