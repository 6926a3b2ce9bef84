"""The worker's use cases and loops: claim a job, run it under its timeout, record the outcome
(fenced); renew leases, pass cancels on, report progress, stop gracefully."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from faststream.rabbit import RabbitBroker
from redis.exceptions import RedisError

from services.worker.settings import WorkerSettings
from services.worker.state import UNSTORABLE, Outcome, Running, WorkerState
from shared.domain import Backoff, Cause, Job, JobError
from shared.domain.status import TERMINAL
from shared.eventstore import AsyncJobStore, UnstorableEventError, existing
from shared.jobtypes import JobCancelledError, NonRetryableError
from shared.metrics import JOB_SECONDS, JOBS_FINISHED, RETRIES, child
from shared.redis_view import RedisView
from shared.retrying import retry_transient

log = logging.getLogger(__name__)

NO_BACKOFF = Backoff(base_s=0.0, cap_s=0.0, jitter=0.0)


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
        after = await retry_transient(
            lambda: store.execute(job.id, command), deadline_s=state.lease_s
        )
    except UnstorableEventError as exc:  # a lone surrogate, say: it would fail on every rerun
        log.error("outcome of %s attempt %d cannot be stored: %s", job.id, attempt, exc)
        failed = Outcome("failed", error_type=UNSTORABLE, error_message=str(exc), retryable=False)
        return await record(store, state, job, attempt, failed, cause)
    except JobError as exc:
        log.warning("outcome of %s attempt %d refused: %s", job.id, attempt, exc)
        return False
    child(JOBS_FINISHED, job.job_type, outcome.kind).inc()
    if outcome.kind == "failed" and after.status not in TERMINAL:
        child(RETRIES, job.job_type).inc()
    log.debug("%s attempt %d recorded: %s", job.id, attempt, outcome.kind)
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


async def heartbeat_loop(
    store: AsyncJobStore, state: WorkerState, settings: WorkerSettings
) -> None:
    """Renews leases at once, then every third of the lease (a beat with nothing running does
    no I/O, so starting with one costs nothing)."""
    every = settings.heartbeat_s or settings.lease_s / 3
    while True:
        try:
            await heartbeat(store, state)
        except Exception as exc:  # the database may be away; the lease is what protects us
            log.warning("heartbeat failed: %r", exc)
        await asyncio.sleep(every)


async def cancel_loop(store: AsyncJobStore, state: WorkerState, settings: WorkerSettings) -> None:
    while True:
        await asyncio.sleep(settings.cancel_poll_s)
        try:
            await poll_cancels(store, state, settings.cancel_grace_s)
        except Exception as exc:
            log.warning("cancel poll failed: %r", exc)


async def shutdown(
    broker: RabbitBroker,
    store: AsyncJobStore,
    state: WorkerState,
    settings: WorkerSettings,
) -> None:
    """Stops taking work and lets the jobs in flight record their outcomes while their leases
    are still renewed and cancels still polled: a lease that lapsed during the wait would let the
    scheduler record LeaseExpired and run the job again elsewhere while it finishes here.

    After ``shutdown_grace_s``, the jobs still running are handed back: their handlers are
    stopped and each attempt is recorded as failed ("WorkerShutdown") with no backoff, so another
    worker retries it at once. That is preferred to letting the lease expire, which would leave
    the job idle for up to a lease and then retry it after a backoff; either way the attempt
    counts. Only then do the heartbeat and cancel loops stop, and the broker closes.
    """
    state.stopping = True  # deliveries waiting for a slot go back to the queue
    loops = [
        asyncio.create_task(heartbeat_loop(store, state, settings)),
        asyncio.create_task(cancel_loop(store, state, settings)),
    ]
    # stops consuming at once, then waits (bounded) for the handlers running now
    stopping = asyncio.create_task(broker.stop())
    try:
        done, _ = await asyncio.wait({stopping}, timeout=settings.shutdown_grace_s)
        if not done:
            handed = hand_back(state)
            log.warning(
                "%d jobs still running after %.0f s: handed back", handed, settings.shutdown_grace_s
            )
        await stopping
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


def progress_reporter(view: RedisView) -> Callable[..., Callable[[float, str], None]]:
    """``reporter(job_id)`` gives a job's ``report(fraction, message)``, callable from any thread:
    the write to Redis (telemetry, not in the log) runs on the loop that asked for the reporter,
    in the background, and a failure is only logged."""
    pending: set[asyncio.Task[None]] = set()

    async def write(job_id: UUID, fraction: float, message: str) -> None:
        try:
            await view.set_progress(job_id, fraction, message)
        except (RedisError, OSError) as exc:
            log.debug("progress of %s not written: %r", job_id, exc)

    def reporter(job_id: UUID) -> Callable[[float, str], None]:
        loop = asyncio.get_running_loop()

        def report(fraction: float, message: str) -> None:
            def schedule() -> None:
                task = loop.create_task(write(job_id, fraction, message))
                pending.add(task)
                task.add_done_callback(pending.discard)

            loop.call_soon_threadsafe(schedule)

        return report

    return reporter
