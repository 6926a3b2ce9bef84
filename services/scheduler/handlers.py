"""The scheduler's use cases, as plain functions of their dependencies, and the leader's loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from faststream.rabbit import RabbitBroker

from services.scheduler.settings import SchedulerSettings
from shared import tracing
from shared.domain import Backoff, Cause, Job, JobError
from shared.domain.status import TERMINAL
from shared.eventstore import AsyncJobStore, Command, ConcurrencyError, Outcome, existing, tables
from shared.health import Check
from shared.messaging import Routes
from shared.metrics import LEASES_EXPIRED, REDISPATCHED, SWEEP_AGE
from shared.outbox import Outgoing, PoisonEventError, to_message
from shared.settings import BusSettings

log = logging.getLogger(__name__)


def scheduling(cause: Cause, version: int | None = None) -> Command:
    """Dispatches a job the database's timer, or its own event, says is due: no clock of ours is
    compared with a due time another process wrote. ``version``: that of the bus message, so a
    stale or duplicate one cannot dispatch a later retry early. With tracing on, a dispatch that
    no traced message caused (a timer's) continues the trace of the job's latest event."""
    return existing(
        lambda job: job.schedule(
            tracing.continued(cause, job.trace_id, job.span_id, "scheduler dispatch"),
            version=version,
        )
    )


def expiring(cause: Cause, attempt: int, backoff: Backoff) -> Command:
    return existing(
        lambda job: job.expire_lease(
            tracing.continued(cause, job.trace_id, job.span_id, "scheduler lease expired"),
            attempt=attempt,
            now=datetime.now(UTC),
            backoff=backoff,
        )
    )


async def schedule_job(
    store: AsyncJobStore, job_id: UUID, cause: Cause, version: int | None = None
) -> bool:
    """Dispatches a due PENDING job; False when it was not PENDING, or moved on since
    ``version`` (nothing recorded)."""
    try:
        await store.execute(job_id, scheduling(cause, version))
    except JobError as exc:
        log.debug("not scheduling %s: %s", job_id, exc)
        return False
    return True


async def schedule_due(store: AsyncJobStore, cause: Cause, limit: int, grace_s: float) -> int:
    """Dispatches every job whose timer is due, in one transaction; returns how many. Each job
    only at the version that wrote its timer: the list is read before the transaction, and a job
    that moved on in between (dispatched, failed, a new retry timer) is left to its new timer."""
    due = await store.run_sync(store.store.due_timers, limit, grace_s)
    if not due:
        return 0
    commands = [(job_id, scheduling(cause, version)) for job_id, version in due]
    outcomes = await store.execute_many(commands)
    return _count(outcomes)


async def expire_leases(store: AsyncJobStore, cause: Cause, backoff: Backoff, limit: int) -> int:
    """Takes expired attempts away from their workers (retry or FAILED); returns how many."""
    expired = await store.run_sync(store.store.expired_leases, limit)
    if not expired:
        return 0
    commands = [(job_id, expiring(cause, attempt, backoff)) for job_id, attempt in expired]
    outcomes = await store.execute_many(commands)
    count = _count(outcomes)
    for outcome in outcomes:
        if outcome.error is None and outcome.job is not None:
            status = outcome.job.status
            LEASES_EXPIRED.labels(status.lower() if status in TERMINAL else "retry").inc()
    return count


async def redispatch(
    store: AsyncJobStore,
    publish: Callable[[Outgoing], Awaitable[None]],
    limit: int,
    deadline_s: float,
) -> int:
    """Sends the work message again for SCHEDULED jobs no worker claimed within ``deadline_s``
    (the broker lost it, or it was dead-lettered); returns how many. A duplicate is harmless:
    a claim needs the job SCHEDULED for that attempt and is decided under the job's lock."""
    overdue = await store.run_sync(
        tables.on_connection, store.store, tables.overdue_dispatches, limit, deadline_s
    )
    if not overdue:
        return 0
    attempts = dict(overdue)
    rows = await store.run_sync(
        tables.on_connection, store.store, tables.last_events, store.store.table, list(attempts)
    )
    sent = 0
    for row in rows:
        event = store.store.decode(row)
        if not isinstance(event, Job.Scheduled) or event.attempt != attempts[event.originator_id]:
            continue
        try:
            message = to_message(row["notification_id"], event)
        except PoisonEventError as exc:  # the relay quarantines it and FAILs the job
            log.warning("cannot send %s again: %s", event.originator_id, exc)
            continue
        assert message is not None
        log.warning(
            "%s unclaimed for %.0f s: sending its work message again",
            event.originator_id,
            deadline_s,
        )
        await publish(message)
        REDISPATCHED.inc()
        sent += 1
    return sent


def _count(outcomes: list[Outcome]) -> int:
    for outcome in outcomes:
        if outcome.error is not None and not isinstance(outcome.error, JobError):
            raise ConcurrencyError(str(outcome.error)) from outcome.error
    return sum(1 for o in outcomes if o.error is None)


def resender(
    broker: RabbitBroker, routes: Routes, bus: BusSettings
) -> Callable[[Outgoing], Awaitable[None]]:
    """Publishes a work message again as the relay does: persistent, mandatory, confirmed."""

    async def publish(message: Outgoing) -> None:
        name = f"scheduler redispatch {message.routing_key}"
        with tracing.producer(name, message.trace_id, message.span_id) as headers:
            await broker.publish(
                message.body,
                exchange=routes.events,
                routing_key=message.routing_key,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                priority=message.priority,
                content_type="application/json",
                persist=True,
                mandatory=True,
                timeout=bus.publish_timeout_s,
                headers=headers,
            )

    return publish


@dataclass
class Sweeps:
    """When the leader loop last ended a sweep (its readiness); ``active``: it runs here."""

    active: bool = False
    swept_at: float = 0.0  # time.monotonic()

    def age(self) -> float:
        """Seconds since the last sweep ended (0 when this process does not lead)."""
        return time.monotonic() - self.swept_at if self.active else 0.0

    def stalled(self, bound_s: float) -> Check:
        """Not ready when this process leads and no sweep ended within ``bound_s``; a
        scheduler that does not lead is ready. Also backs ``jobtrail_scheduler_sweep_age``."""
        SWEEP_AGE.set_function(self.age)

        def check() -> str | None:
            age = self.age()
            if age > bound_s:
                return f"scheduler leader: no sweep ended for {age:.0f} s (bound {bound_s:g} s)"
            return None

        return check


async def leader_loop(
    store: AsyncJobStore,
    settings: SchedulerSettings,
    backoff: Backoff,
    actor: str,
    publish: Callable[[Outgoing], Awaitable[None]],
    sweeps: Sweeps | None = None,
) -> None:
    """What the scheduler leader does, for ever: dispatches due timers, expires lapsed leases,
    sends unclaimed work messages again; sleeps a tick when a round had less than a batch.
    ``sweeps`` learns when each round ends."""
    sweeps = sweeps or Sweeps()
    sweeps.active, sweeps.swept_at = True, time.monotonic()
    try:
        await _sweep_forever(store, settings, backoff, actor, publish, sweeps)
    finally:
        sweeps.active = False


async def _sweep_forever(
    store: AsyncJobStore,
    settings: SchedulerSettings,
    backoff: Backoff,
    actor: str,
    publish: Callable[[Outgoing], Awaitable[None]],
    sweeps: Sweeps,
) -> None:
    cause = Cause(actor, correlation_id=f"{actor}/sweep")
    while True:
        scheduled = await schedule_due(store, cause, settings.sweep_batch, settings.missed_grace_s)
        expired = await expire_leases(store, cause, backoff, settings.sweep_batch)
        if settings.dispatch_deadline_s:
            await redispatch(store, publish, settings.sweep_batch, settings.dispatch_deadline_s)
        sweeps.swept_at = time.monotonic()
        if scheduled or expired:
            log.info("leader: %d timers dispatched, %d leases expired", scheduled, expired)
        if scheduled < settings.sweep_batch and expired < settings.sweep_batch:
            await asyncio.sleep(settings.tick_s)
