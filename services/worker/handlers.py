"""The worker's use cases: claim a job, run it under its timeout, record the outcome (fenced)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from shared.domain import Backoff, Cause, Job, JobError
from shared.eventstore import AsyncJobStore, UnstorableEventError, existing
from shared.jobtypes import JobCancelledError, JobContext, NonRetryableError, Registry
from shared.metrics import JOB_SECONDS, JOBS_FINISHED, child
from shared.retrying import retry_transient

log = logging.getLogger(__name__)

NO_BACKOFF = Backoff(base_s=0.0, cap_s=0.0, jitter=0.0)


Attempt = tuple[UUID, int]
"""(job id, attempt): what a worker runs and holds a lease for. One worker may run two attempts
of one job at once: the first lost its lease while still running, and the second was then
scheduled onto the same worker."""


@dataclass
class Running:
    """An attempt of a job this worker runs now."""

    job_id: UUID
    attempt: int
    context: JobContext
    task: asyncio.Task[Any] | None = None
    lease_lost: bool = False
    cancel_asked: bool = False  # a cancel of this attempt was requested (jobtrail_leases)
    handed_back: bool = False  # the worker is stopping and gives this attempt back (a retry)

    @property
    def key(self) -> Attempt:
        return (self.job_id, self.attempt)

    def stop(self) -> None:
        """Asks the handler to stop: cooperatively (its context), and by cancelling its task."""
        self.context.cancelled.set()
        if self.task is not None:
            self.task.cancel()


UNSTORABLE = "UnstorableResult"
"""The error type of a job whose result or error the log cannot store: it ends FAILED."""


@dataclass
class Outcome:
    kind: str  # completed | failed | cancelled
    result: Any = None
    error_type: str = ""
    error_message: str = ""
    retryable: bool = True
    retry_at_once: bool = False  # not the job's fault (the worker stops): no backoff


@dataclass
class WorkerState:
    """What the worker holds: its id, its running jobs, its handlers' thread budget."""

    worker_id: str
    lease_s: float
    backoff: Backoff
    registry: Registry
    running: dict[Attempt, Running] = field(default_factory=dict)
    executions: int = 0
    stopping: bool = False  # set on SIGTERM: deliveries not yet started go back to the queue
    handing_back: bool = False  # the shutdown grace is over: what starts now is handed back

    def add(self, running: Running) -> None:
        """Registers an attempt; an older attempt of the same job still running here lost its
        lease (the job was scheduled again), so it is stopped: its outcome would be refused."""
        for key, other in list(self.running.items()):
            if key[0] == running.job_id and key[1] < running.attempt and not other.lease_lost:
                log.warning("%s attempt %d is superseded: stopping it", key[0], key[1])
                other.lease_lost = True
                other.stop()
        running.handed_back = self.handing_back
        self.running[running.key] = running

    def remove(self, running: Running) -> None:
        """Forgets this attempt, and only this one."""
        if self.running.get(running.key) is running:
            del self.running[running.key]


async def claim(
    store: AsyncJobStore, state: WorkerState, job_id: UUID, attempt: int, cause: Cause
) -> Job | None:
    """Claims the job for ``attempt``; None when it is no longer SCHEDULED for it (a duplicate)."""
    start = existing(
        lambda job: job.start(
            cause,
            worker_id=state.worker_id,
            attempt=attempt,
            lease_s=state.lease_s,
            now=datetime.now(UTC),
        )
    )
    try:
        return await retry_transient(lambda: store.execute(job_id, start))
    except JobError as exc:
        log.info("dropping delivery for %s attempt %d: %s", job_id, attempt, exc)
        return None


_SHUTDOWN = Outcome(
    "failed",
    error_type="WorkerShutdown",
    error_message="worker shutting down; handed back for a retry",
    retry_at_once=True,
)


async def execute(state: WorkerState, job: Job, running: Running) -> Outcome:
    """Runs the job's handler under its timeout; turns what happened into an Outcome."""
    job_type = state.registry.get(job.job_type)
    if running.handed_back:  # claimed in the last instant of a graceful stop: not run here
        return _SHUTDOWN
    state.executions += 1
    started = time.monotonic()
    try:
        # asyncio.timeout, not wait_for: no extra task per job (the handler runs in this one)
        async with asyncio.timeout(job.timeout_s):
            if job_type.is_async:
                value = await job_type.call(job.payload, running.context)
            else:
                value = await asyncio.to_thread(job_type.call, job.payload, running.context)
        return Outcome("completed", result=job_type.dump_result(value))
    except (JobCancelledError, asyncio.CancelledError):
        if running.lease_lost:
            raise
        if running.cancel_asked:
            return Outcome("cancelled")
        if running.handed_back:
            return _SHUTDOWN
        raise
    except TimeoutError:
        return Outcome(
            "failed", error_type="TimeoutError", error_message=f"timed out after {job.timeout_s} s"
        )
    except NonRetryableError as exc:
        return Outcome(
            "failed", error_type=type(exc).__name__, error_message=str(exc), retryable=False
        )
    except Exception as exc:
        return Outcome("failed", error_type=type(exc).__name__, error_message=str(exc) or repr(exc))
    finally:
        child(JOB_SECONDS, job.job_type).observe(time.monotonic() - started)


async def record(
    store: AsyncJobStore,
    state: WorkerState,
    job: Job,
    attempt: int,
    outcome: Outcome,
    cause: Cause,
) -> bool:
    """Records the outcome of our attempt; False when we were fenced out (nothing recorded)."""
    worker = state.worker_id
    if outcome.kind == "completed":
        command = existing(
            lambda job: job.complete(
                cause, worker_id=worker, attempt=attempt, result=outcome.result
            )
        )
    elif outcome.kind == "cancelled":
        command = existing(
            lambda job: job.acknowledge_cancel(cause, worker_id=worker, attempt=attempt)
        )
    else:
        command = existing(
            lambda job: job.fail_attempt(
                cause,
                worker_id=worker,
                attempt=attempt,
                error_type=outcome.error_type,
                error_message=outcome.error_message,
                retryable=outcome.retryable,
                now=datetime.now(UTC),
                backoff=NO_BACKOFF if outcome.retry_at_once else state.backoff,
            )
        )
    try:
        await retry_transient(lambda: store.execute(job.id, command), deadline_s=state.lease_s)
    except UnstorableEventError as exc:  # a lone surrogate, say: it would fail on every rerun
        log.error("outcome of %s attempt %d cannot be stored: %s", job.id, attempt, exc)
        failed = Outcome("failed", error_type=UNSTORABLE, error_message=str(exc), retryable=False)
        return await record(store, state, job, attempt, failed, cause)
    except JobError as exc:
        log.warning("outcome of %s attempt %d refused: %s", job.id, attempt, exc)
        return False
    child(JOBS_FINISHED, job.job_type, outcome.kind).inc()
    return True


async def heartbeat(store: AsyncJobStore, state: WorkerState) -> None:
    """Renews the leases of the attempts running here; stops those whose lease is gone."""
    if not state.running:
        return
    held = list(state.running)
    kept = await store.run_sync(store.store.renew_leases, state.worker_id, held, state.lease_s)
    for key in held:
        running = state.running.get(key)
        if running is None or key in kept or running.lease_lost:
            continue
        log.warning(
            "lease of %s attempt %d is gone: stopping it (its outcome would be refused)", *key
        )
        running.lease_lost = True
        running.stop()


def hand_back(state: WorkerState) -> int:
    """Stops every attempt still running, for the worker to record it as failed with no backoff
    (a retry at once, elsewhere); returns how many. Used at the end of a graceful stop."""
    state.handing_back = True
    stopped = 0
    for running in list(state.running.values()):
        if running.task is not None and not running.task.done() and not running.lease_lost:
            log.warning("%s attempt %d still running at shutdown: handing it back", *running.key)
            running.handed_back = True
            running.stop()
            stopped += 1
    return stopped


async def poll_cancels(store: AsyncJobStore, state: WorkerState, grace_s: float) -> None:
    """Passes cancel requests on to running handlers (cheap: one indexed query)."""
    if not state.running:
        return
    for key in await store.run_sync(store.store.cancel_requests, state.worker_id):
        running = state.running.get(key)
        if running is not None and not running.cancel_asked:
            log.info("cancel requested for %s attempt %d", *key)
            running.cancel_asked = True
            running.context.cancelled.set()
            if running.task is not None:
                asyncio.get_running_loop().call_later(grace_s, _cancel_if_running, running)


def _cancel_if_running(running: Running) -> None:
    if running.task is not None and not running.task.done():
        running.task.cancel()
