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
from shared.metrics import JOB_SECONDS, JOBS_FINISHED
from shared.retrying import retry_transient

log = logging.getLogger(__name__)


@dataclass
class Running:
    """A job this worker runs now."""

    job_id: UUID
    attempt: int
    context: JobContext
    task: asyncio.Task[Any] | None = None
    lease_lost: bool = False


UNSTORABLE = "UnstorableResult"
"""The error type of a job whose result or error the log cannot store: it ends FAILED."""


@dataclass
class Outcome:
    kind: str  # completed | failed | cancelled
    result: Any = None
    error_type: str = ""
    error_message: str = ""
    retryable: bool = True


@dataclass
class WorkerState:
    """What the worker holds: its id, its running jobs, its handlers' thread budget."""

    worker_id: str
    lease_s: float
    backoff: Backoff
    registry: Registry
    running: dict[UUID, Running] = field(default_factory=dict)
    executions: int = 0
    stopping: bool = False  # set on SIGTERM: deliveries not yet started go back to the queue


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


async def execute(state: WorkerState, job: Job, running: Running) -> Outcome:
    """Runs the job's handler under its timeout; turns what happened into an Outcome."""
    job_type = state.registry.get(job.job_type)
    state.executions += 1
    started = time.monotonic()
    try:
        if job_type.is_async:
            value = await asyncio.wait_for(
                job_type.call(job.payload, running.context), job.timeout_s
            )
        else:
            call = job_type.call
            value = await asyncio.wait_for(
                asyncio.to_thread(call, job.payload, running.context), job.timeout_s
            )
        return Outcome("completed", result=job_type.dump_result(value))
    except (JobCancelledError, asyncio.CancelledError):
        if running.context.cancelled.is_set() and not running.lease_lost:
            return Outcome("cancelled")
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
        JOB_SECONDS.labels(job.job_type).observe(time.monotonic() - started)


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
                backoff=state.backoff,
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
    JOBS_FINISHED.labels(job.job_type, outcome.kind).inc()
    return True


async def heartbeat(store: AsyncJobStore, state: WorkerState) -> None:
    """Renews running jobs' leases; stops the handlers of jobs whose lease is gone."""
    if not state.running:
        return
    ids = list(state.running)
    kept = await store.run_sync(store.store.renew_leases, state.worker_id, ids, state.lease_s)
    for job_id in ids:
        running = state.running.get(job_id)
        if running is None:
            continue
        if job_id not in kept:
            log.warning("lease of %s is gone: stopping it (its outcome would be refused)", job_id)
            running.lease_lost = True
            running.context.cancelled.set()
            if running.task is not None:
                running.task.cancel()


async def poll_cancels(store: AsyncJobStore, state: WorkerState, grace_s: float) -> None:
    """Passes cancel requests on to running handlers (cheap: one indexed query)."""
    if not state.running:
        return
    for job_id in await store.run_sync(store.store.cancel_requests, state.worker_id):
        running = state.running.get(job_id)
        if running is not None and not running.context.cancelled.is_set():
            log.info("cancel requested for %s", job_id)
            running.context.cancelled.set()
            if running.task is not None:
                asyncio.get_running_loop().call_later(grace_s, _cancel_if_running, running)


def _cancel_if_running(running: Running) -> None:
    if running.task is not None and not running.task.done():
        running.task.cancel()
