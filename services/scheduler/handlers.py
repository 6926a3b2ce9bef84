"""The scheduler's use cases, as plain functions of their dependencies."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from uuid import UUID

from shared.domain import Backoff, Cause, JobError
from shared.eventstore import AsyncJobStore, Command, ConcurrencyError, Outcome, existing

log = logging.getLogger(__name__)


def scheduling(cause: Cause) -> Command:
    return existing(lambda job: job.schedule(cause, datetime.now(UTC)))


def expiring(cause: Cause, attempt: int, backoff: Backoff) -> Command:
    return existing(
        lambda job: job.expire_lease(cause, attempt=attempt, now=datetime.now(UTC), backoff=backoff)
    )


async def schedule_job(store: AsyncJobStore, job_id: UUID, cause: Cause) -> bool:
    """Dispatches a due PENDING job; False when it was not PENDING or not due (nothing recorded)."""
    try:
        await store.execute(job_id, scheduling(cause))
    except JobError as exc:
        log.debug("not scheduling %s: %s", job_id, exc)
        return False
    return True


async def schedule_due(store: AsyncJobStore, cause: Cause, limit: int, grace_s: float) -> int:
    """Dispatches every job whose timer is due, in one transaction; returns how many."""
    due = await store.run_sync(store.store.due_timers, limit, grace_s)
    if not due:
        return 0
    outcomes = await store.execute_many([(job_id, scheduling(cause)) for job_id in due])
    return _count(outcomes)


async def expire_leases(store: AsyncJobStore, cause: Cause, backoff: Backoff, limit: int) -> int:
    """Takes expired attempts away from their workers (retry or FAILED); returns how many."""
    expired = await store.run_sync(store.store.expired_leases, limit)
    if not expired:
        return 0
    commands = [(job_id, expiring(cause, attempt, backoff)) for job_id, attempt in expired]
    outcomes = await store.execute_many(commands)
    return _count(outcomes)


def _count(outcomes: list[Outcome]) -> int:
    for outcome in outcomes:
        if outcome.error is not None and not isinstance(outcome.error, JobError):
            raise ConcurrencyError(str(outcome.error)) from outcome.error
    return sum(1 for o in outcomes if o.error is None)
