"""The scheduler's handlers, through its real router (in memory) over the real store.

Each test writes a job's history to PostgreSQL, sends the scheduler the message its last event
becomes (as the writers publish it), and reads what the scheduler then recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.rabbit import RabbitBroker
from prometheus_client import REGISTRY

from services.scheduler import subscribers
from services.scheduler.handlers import expire_leases, schedule_job
from shared import dead_letters
from shared.domain import Backoff, Cause, Job, Status
from shared.eventstore import AsyncJobStore, JobStore, existing
from shared.service import Service
from tests.handlers import deliver, forget_dead_letters, in_memory, last_message, service_for
from tests.jobs import CAUSE, NO_JITTER, fail, record

AT_ONCE = Backoff(base_s=0.0, cap_s=0.0, jitter=0.0)
KEY = "job.submitted"  # the binding the in-memory broker knows (tests/handlers.py ``deliver``)


@pytest.fixture
def scheduler(postgres_url: str, redis_url: str, amqp_url: str) -> Iterator[Service]:
    service = service_for("scheduler", postgres_url, redis_url, amqp_url)
    yield service
    forget_dead_letters(postgres_url, service)


def failed_once(store: JobStore, backoff: Backoff) -> uuid.UUID:
    """A job whose first attempt failed (retryable): PENDING, due per ``backoff``."""
    now = datetime.now(UTC)
    return record(
        store,
        [
            lambda j: j.schedule(CAUSE, now),
            lambda j: j.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=now),
            lambda j: fail(j, attempt=1, retryable=True, now=now, backoff=backoff),
        ],
        max_attempts=3,
    )


def events(store: JobStore, job_id: uuid.UUID) -> list[str]:
    return [type(e).__name__ for e in store.history(job_id)]


async def test_an_attempt_failed_due_at_once_dispatches_the_next_attempt(
    store: JobStore, scheduler: Service
) -> None:
    # Given a job whose attempt failed and that was due again when the failure was written
    job_id = failed_once(store, AT_ONCE)
    message = last_message(store, job_id)
    async with in_memory(scheduler, subscribers.router) as broker:
        # When the scheduler gets the AttemptFailed event
        await deliver(broker, message, scheduler.routes.events, KEY)
    # Then the job is scheduled for attempt 2, by the scheduler
    history = store.history(job_id)
    assert events(store, job_id)[-2:] == ["AttemptFailed", "Scheduled"]
    scheduled = history[-1]
    assert isinstance(scheduled, Job.Scheduled) and scheduled.attempt == 2
    assert scheduled.actor == scheduler.instance
    assert scheduled.correlation_id == message.correlation_id


async def test_an_attempt_failed_due_later_is_left_to_the_timer(
    store: JobStore, scheduler: Service
) -> None:
    # Given a job whose retry is due a backoff after the failure
    job_id = failed_once(store, NO_JITTER)
    async with in_memory(scheduler, subscribers.router) as broker:
        # When the scheduler gets the AttemptFailed event
        await deliver(broker, last_message(store, job_id), scheduler.routes.events, KEY)
    # Then nothing is recorded: the timer row dispatches it when due
    assert events(store, job_id)[-1] == "AttemptFailed"
    assert store.get(job_id).status is Status.PENDING


async def test_a_stale_event_cannot_dispatch_a_later_retry_early(
    store: JobStore, scheduler: Service
) -> None:
    # Given a job whose first attempt failed (due at once), ...
    job_id = failed_once(store, AT_ONCE)
    stale = last_message(store, job_id)
    now = datetime.now(UTC)
    async with in_memory(scheduler, subscribers.router) as broker:
        assert await schedule_job(scheduler.store, job_id, CAUSE)  # the use case, directly
        # ... and whose second attempt then failed too, due again only after a backoff
        store.execute(
            job_id,
            existing(lambda j: j.start(CAUSE, worker_id="w2", attempt=2, lease_s=30, now=now)),
        )
        store.execute(
            job_id,
            existing(
                lambda j: j.fail_attempt(
                    CAUSE,
                    worker_id="w2",
                    attempt=2,
                    error_type="E",
                    error_message="m",
                    retryable=True,
                    now=now,
                    backoff=NO_JITTER,
                )
            ),
        )
        # When the first failure's event arrives again (a duplicate, or a late delivery)
        await deliver(broker, stale, scheduler.routes.events, KEY)
    # Then the job waits for its timer: the old event does not dispatch attempt 3 early
    assert events(store, job_id)[-1] == "AttemptFailed"
    assert store.get(job_id).status is Status.PENDING


async def test_a_requeued_job_runs_again(store: JobStore, scheduler: Service) -> None:
    # Given a FAILED job an operator requeued
    now = datetime.now(UTC)
    job_id = record(
        store,
        [
            lambda j: j.schedule(CAUSE, now),
            lambda j: j.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=now),
            lambda j: fail(j, attempt=1, retryable=False, now=now, backoff=NO_JITTER),
            lambda j: j.requeue(Cause("operator", "c-rq", reason="fixed the input")),
        ],
        max_attempts=1,
    )
    async with in_memory(scheduler, subscribers.router) as broker:
        # When the scheduler gets the Requeued event
        await deliver(broker, last_message(store, job_id), scheduler.routes.events, KEY)
    # Then the job is scheduled for its next attempt
    assert events(store, job_id)[-2:] == ["Requeued", "Scheduled"]
    assert store.get(job_id).status is Status.SCHEDULED


async def test_a_dead_letter_copy_is_recorded_once(store: JobStore, scheduler: Service) -> None:
    # Given a copy of a message RabbitMQ dead-lettered from a work queue (its x-death header)
    job_id = uuid.uuid4()
    body = b'{"data": {"job_id": "%s"}, "garbage": true}' % str(job_id).encode()
    queue = scheduler.routes.topology.work_queue("default")
    death: dict[str, Any] = {"queue": queue, "reason": "expired", "count": 1, "exchange": "x"}
    async with in_memory(scheduler, subscribers.router) as broker:
        # When the ledger gets it twice (a redelivery)
        for _ in range(2):
            await broker.publish(
                body,
                exchange=scheduler.routes.dlx,
                message_id=f"m-{job_id}",
                headers={"x-death": [death]},
            )
    # Then it is recorded once, against its job, with what RabbitMQ said
    rows = await asyncio.to_thread(dead_letters.recorded, store, job_id, 10)
    assert [(r["queue"], r["reason"], r["message_id"]) for r in rows] == [
        (queue, "expired", f"m-{job_id}")
    ]
    assert "dead-lettered by RabbitMQ (expired)" in str(rows[0]["error"])


def test_the_router_consumes_the_scheduler_queue_and_the_ledger(scheduler: Service) -> None:
    broker = RabbitBroker()
    broker.include_router(subscribers.router(scheduler))
    queues = sorted(sub.queue.name for sub in broker.subscribers)  # type: ignore[attr-defined]
    assert queues == sorted([scheduler.routes.scheduler.name, scheduler.routes.ledger.name])


async def test_an_expired_lease_is_counted_by_what_became_of_the_job(store: JobStore) -> None:
    # Given two jobs whose attempt's lease ran out: one with attempts left, one on its last
    now = datetime.now(UTC)

    def started(max_attempts: int) -> uuid.UUID:
        steps = [
            lambda j: j.schedule(CAUSE, now),
            lambda j: j.start(CAUSE, worker_id="w1", attempt=1, lease_s=0.05, now=now),
        ]
        return record(store, steps, max_attempts=max_attempts)

    retried, failed = started(3), started(1)
    await asyncio.sleep(0.2)
    before = {o: counted_expiries(o) for o in ("retry", "failed")}

    # When the leader's sweep expires them
    async with AsyncJobStore(JobStore(store.settings)) as aio:
        expired = await expire_leases(aio, CAUSE, AT_ONCE, limit=10_000)

    # Then each is counted under its outcome
    assert expired >= 2
    assert store.get(retried).status is not Status.FAILED
    assert store.get(failed).status is Status.FAILED
    assert counted_expiries("retry") >= before["retry"] + 1
    assert counted_expiries("failed") >= before["failed"] + 1


def counted_expiries(outcome: str) -> float:
    return REGISTRY.get_sample_value("jobtrail_leases_expired_total", {"outcome": outcome}) or 0.0
