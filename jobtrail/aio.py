"""The asyncio client of jobtrail's HTTP API (``jobtrail.client`` says what both clients do).

``AsyncClient`` has ``Client``'s operations as coroutines, and the same retries, typed errors,
long poll and typed job types: the two differ only in how they send a request and pause.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack, overload
from uuid import UUID

import httpx
from pydantic import BaseModel
from tenacity import AsyncRetrying

from contracts.api import ENDED, Accepted, BatchItem, EventView, JobView
from contracts.messages import SubmitJob
from jobtrail import calls
from jobtrail.calls import Call, RetryPolicy, SubmitOptions
from jobtrail.errors import NotFoundError, WaitTimeoutError
from shared.jobtypes import JobContext, JobType, registry

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out")
M = TypeVar("M")
JobId = UUID | str


class AsyncClient:
    """The asyncio client of the API (the same operations as ``Client``); use it in an ``async
    with`` block or ``await aclose()`` it."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        options = calls.client_options(url, api_key, timeout, headers)
        self.http = httpx.AsyncClient(transport=transport, **options)
        self.long_poll = True
        """False once the server showed it has no wait endpoint: ``wait`` polls instead."""

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call) -> httpx.Response:
        """Sends ``call``, again under the retry policy; the answer, or its typed error."""

        async def once() -> httpx.Response:
            timeout = call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT
            response = await self.http.request(
                call.method, call.path, params=call.params, json=call.json, timeout=timeout
            )
            return calls.checked(response)

        return await AsyncRetrying(**self.retry.options(call))(once)

    async def submit(
        self,
        type: str,
        payload: BaseModel | Mapping[str, Any] | None = None,
        **options: Unpack[SubmitOptions],
    ) -> Accepted:
        """Submits a job (its type's defaults fill what is not given); ``replayed`` is true when
        the idempotency key met an earlier job."""
        body = calls.job_body(type, payload, **options)
        return calls.read(await self.send(Call("POST", "/v1/jobs", json=body)), Accepted)

    async def submit_many(self, jobs: Iterable[SubmitJob | Mapping[str, Any]]) -> list[BatchItem]:
        """Submits up to 1,000 jobs in one transaction; each item has the job's id or errors."""
        call = Call("POST", "/v1/jobs/batch", json=calls.batch_body(jobs))
        return calls.read(await self.send(call), list[BatchItem])

    async def get(self, job_id: JobId) -> JobView:
        """The job's current state."""
        return calls.read(await self.send(Call("GET", f"/v1/jobs/{job_id}")), JobView)

    async def state(
        self, job_id: JobId, *, at: datetime | str | None = None, version: int | None = None
    ) -> JobView:
        """The job as it was at time ``at`` (with a zone) or after its first ``version`` events,
        from the log."""
        call = Call("GET", f"/v1/jobs/{job_id}", params=calls.state_params(at, version))
        return calls.read(await self.send(call), JobView)

    async def events(self, job_id: JobId) -> list[EventView]:
        """The job's whole history, in version order."""
        return calls.read(
            await self.send(Call("GET", f"/v1/jobs/{job_id}/events")), list[EventView]
        )

    async def cancel(self, job_id: JobId, reason: str | None = None) -> JobView:
        """Cancels the job (a running one stops when its worker acknowledges); ConflictError
        when it already ended."""
        body = {"reason": reason} if reason else None
        call = Call("POST", f"/v1/jobs/{job_id}/cancel", json=body, repeatable=False)
        return calls.read(await self.send(call), JobView)

    async def wait(self, job_id: JobId, timeout: float | None = None) -> JobView:
        """The job once it has ended (COMPLETED, FAILED, CANCELLED); WaitTimeoutError when it
        has not after ``timeout`` seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pauses = calls.poll_delays()
        while True:
            left = float("inf") if deadline is None else deadline - time.monotonic()
            started = time.monotonic()
            job = await self._long_poll(job_id, left) if self.long_poll else await self.get(job_id)
            if job.status in ENDED:
                return job
            left = float("inf") if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(job, timeout or 0.0)
            if time.monotonic() - started < calls.QUICK_ANSWER_S:
                await asyncio.sleep(min(next(pauses), left))

    async def _long_poll(self, job_id: JobId, left: float) -> JobView:
        try:
            return calls.read(await self.send(calls.wait_call(job_id, left)), JobView)
        except NotFoundError:
            job = await self.get(job_id)  # NotFoundError again when there is no such job
            self.long_poll = False  # the job is there, the wait endpoint is not: poll
            return job

    @overload
    async def result(self, job_id: JobId, model: type[M], *, timeout: float | None = None) -> M: ...
    @overload
    async def result(
        self, job_id: JobId, model: None = None, *, timeout: float | None = None
    ) -> Any: ...
    async def result(
        self, job_id: JobId, model: type[Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """The job's result once it has ended, as ``model`` or its type's result model (when
        its module is imported here), else JSON. JobFailedError / JobCancelledError when it
        ended without one, WaitTimeoutError after ``timeout`` seconds."""
        return calls.result_of(await self.wait(job_id, timeout), model)

    @overload
    def job(self, fn: Callable[[In, JobContext], Awaitable[Out]]) -> AsyncBoundJob[In, Out]: ...
    @overload
    def job(self, fn: Callable[[In], Awaitable[Out]]) -> AsyncBoundJob[In, Out]: ...
    @overload
    def job(self, fn: Callable[[In, JobContext], Out]) -> AsyncBoundJob[In, Out]: ...
    @overload
    def job(self, fn: Callable[[In], Out]) -> AsyncBoundJob[In, Out]: ...
    def job(self, fn: Callable[..., Any]) -> AsyncBoundJob[Any, Any]:
        """A registered job type (the function ``@job_type`` decorated) bound to this client:
        ``client.job(hash_text).submit(HashIn(text="hi"))``, typed by its payload and result."""
        return AsyncBoundJob(self, registry.of(fn))


class AsyncBoundJob(Generic[In, Out]):
    """A job type bound to a client: submissions typed by its payload model."""

    def __init__(self, client: AsyncClient, job_type: JobType) -> None:
        self.client, self.job_type = client, job_type

    async def submit(
        self,
        payload: In,
        **options: Unpack[SubmitOptions],
    ) -> AsyncJobHandle[Out]:
        """Submits one job of this type (Celery's ``delay``); the handle waits for its result."""
        accepted = await self.client.submit(self.job_type.name, payload, **options)
        return AsyncJobHandle(self.client, self.job_type, accepted)


class AsyncJobHandle(Generic[Out]):
    """A submitted job: its id, and its state, wait and typed result."""

    def __init__(self, client: AsyncClient, job_type: JobType, accepted: Accepted) -> None:
        self.client, self.job_type, self.accepted = client, job_type, accepted
        self.id = accepted.id

    async def get(self) -> JobView:
        return await self.client.get(self.id)

    async def wait(self, timeout: float | None = None) -> JobView:
        return await self.client.wait(self.id, timeout)

    async def result(self, timeout: float | None = None) -> Out:
        """The result as the type's result model (``Out``); see ``Client.result``."""
        value: Out = calls.result_of(await self.client.wait(self.id, timeout), self.job_type.result)
        return value

    async def cancel(self, reason: str | None = None) -> JobView:
        return await self.client.cancel(self.id, reason)
