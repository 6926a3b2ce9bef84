"""Leases, timers and dispatches on PostgreSQL's clock; leases per attempt; cancels that end the
attempt they were asked of. Real PostgreSQL.

A process whose clock is off is imitated in-process: the command gets ``now`` from the skewed
clock and the events it records carry timestamps from it (as they would from that process).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest

from services.scheduler.handlers import scheduling
from shared.domain import Backoff, Cause, Job, Status
from shared.eventstore import AsyncJobStore, JobStore, existing, tables
from shared.settings import StoreSettings
from tests.jobs import CAUSE, NO_JITTER, fail

LEASE_S = 30.0


@contextlib.contextmanager
def clock_off_by(seconds: float) -> Iterator[timedelta]:
    """Events recorded inside carry timestamps ``seconds`` off the real time."""
    skew = timedelta(seconds=seconds)
    with mock.patch.object(
        Job.Event, "create_timestamp", staticmethod(lambda: datetime.now(UTC) + skew)
    ):
        yield skew


def _now(skew: timedelta = timedelta(0)) -> datetime:
    return datetime.now(UTC) + skew


def _row(store: JobStore, table: str, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The row of ``job_id`` in a derived table, with ``left_s``: its time column minus now()."""
    column = {"jobtrail_leases": "expires_at", "jobtrail_timers": "due_at"}.get(table, "sent_at")

    def read(conn: Any) -> dict[str, Any] | None:
        row = conn.execute(
            f"SELECT *, extract(epoch FROM {column} - now())::float AS left_s "
            f"FROM {table} WHERE job_id = %s",
            [job_id],
        ).fetchone()
        return dict(row) if row else None

    return tables.on_connection(store, read)


def _submitted_and_scheduled(store: JobStore, skew: timedelta = timedelta(0)) -> uuid.UUID:
    job_id = uuid.uuid4()
    store.execute(job_id, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id))
    with clock_off_by(skew.total_seconds()):
        store.execute(job_id, existing(lambda j: j.schedule(CAUSE, _now(skew))))
    return job_id


def _start(store: JobStore, job_id: uuid.UUID, worker: str, attempt: int, skew: timedelta) -> None:
    with clock_off_by(skew.total_seconds()):
        store.execute(
            job_id,
            existing(
                lambda j: j.start(
                    CAUSE, worker_id=worker, attempt=attempt, lease_s=LEASE_S, now=_now(skew)
                )
            ),
        )


@pytest.mark.parametrize("skew_s", [-60.0, 60.0])
def test_a_lease_is_as_long_on_the_database_clock_whatever_the_worker_clock(
    store: JobStore, skew_s: float
) -> None:
    # Given a worker whose clock is a minute behind (or ahead)
    job_id = _submitted_and_scheduled(store)
    # When it claims the job with a 30 s lease
    _start(store, job_id, "w-skewed", 1, timedelta(seconds=skew_s))
    # Then the lease row expires 30 s from the database's now, not 30 s from the worker's now
    lease = _row(store, "jobtrail_leases", job_id)
    assert lease is not None
    assert LEASE_S - 5 < lease["left_s"] <= LEASE_S, lease
    # And the scheduler's sweep does not take it away
    assert job_id not in {j for j, _ in store.expired_leases(limit=10_000)}


def test_a_retry_written_by_a_worker_a_minute_ahead_is_due_after_its_backoff(
    store: JobStore,
) -> None:
    # Given a job that a worker whose clock is a minute ahead runs
    ahead = timedelta(seconds=60)
    job_id = _submitted_and_scheduled(store)
    _start(store, job_id, "w-ahead", 1, ahead)
    # When its attempt fails with a 1 s backoff
    with clock_off_by(60):
        store.execute(
            job_id,
            existing(lambda j: fail(j, worker_id="w-ahead", now=_now(ahead))),
        )
    # Then the timer is due 1 s from the database's now (not 61 s)
    timer = _row(store, "jobtrail_timers", job_id)
    assert timer is not None and timer["delayed"] and 0 < timer["left_s"] <= 1.0, timer
    # And once the timer is due, the scheduler (clock right) dispatches it
    asyncio.run(asyncio.sleep(max(timer["left_s"], 0) + 0.1))
    assert job_id in {due for due, _ in store.due_timers(limit=10_000, grace_s=0)}
    job = store.execute(job_id, scheduling(Cause("scheduler", "c")))
    assert job.status is Status.SCHEDULED and job.attempt == 1


def test_a_dispatch_is_sent_at_the_database_time(store: JobStore) -> None:
    # Given a scheduler whose clock is a minute behind, which schedules a job
    job_id = _submitted_and_scheduled(store, timedelta(seconds=-60))
    # Then the dispatch row says it was sent now, so it is not resent as 60 s overdue
    dispatch = _row(store, "jobtrail_dispatches", job_id)
    assert dispatch is not None and -5 < dispatch["left_s"] <= 0, dispatch
    overdue = tables.on_connection(store, tables.overdue_dispatches, 10_000, 30.0)
    assert job_id not in {j for j, _ in overdue}


def test_a_lease_is_renewed_only_for_the_attempt_that_holds_it(store: JobStore) -> None:
    # Given attempt 1 of a job on worker W lost its lease, and attempt 2 runs on W too
    job_id = _submitted_and_scheduled(store)
    _start(store, job_id, "W", 1, timedelta(0))
    store.execute(
        job_id,
        existing(
            lambda j: j.expire_lease(CAUSE, attempt=1, now=_now(), backoff=Backoff(0, 1, 0, 0))
        ),
    )
    store.execute(job_id, existing(lambda j: j.schedule(CAUSE)))
    _start(store, job_id, "W", 2, timedelta(0))
    # When W renews for attempt 1 (still running there) and for attempt 2
    stale = store.renew_leases("W", [(job_id, 1)], LEASE_S)
    current = store.renew_leases("W", [(job_id, 2)], LEASE_S)
    # Then only attempt 2's lease is renewed; attempt 1 learns it has none
    assert stale == {} and current == {(job_id, 2): False}


def test_a_cancel_then_a_lost_lease_leaves_nothing_to_schedule(store: JobStore) -> None:
    # Given a running job whose cancel was requested: the worker's lease row says so
    job_id = _submitted_and_scheduled(store)
    _start(store, job_id, "W", 1, timedelta(0))
    store.execute(job_id, existing(lambda j: j.request_cancel(CAUSE)))
    assert (job_id, 1) in store.cancel_requests("W")
    # When the worker dies and the scheduler's sweep expires the lease
    job = store.execute(
        job_id, existing(lambda j: j.expire_lease(CAUSE, attempt=1, now=_now(), backoff=NO_JITTER))
    )
    # Then the job is CANCELLED in the same transaction: no lease, no timer, no dispatch row
    assert job.status is Status.CANCELLED
    assert [type(e).__name__ for e in store.history(job_id)][-2:] == ["LeaseExpired", "Cancelled"]
    for table in ("jobtrail_leases", "jobtrail_timers", "jobtrail_dispatches"):
        assert _row(store, table, job_id) is None, table


def test_a_scheduled_retry_of_a_stale_message_is_refused(
    store: JobStore, store_settings: StoreSettings
) -> None:
    # Given a job PENDING for its second attempt (the first failed)
    job_id = _submitted_and_scheduled(store)
    _start(store, job_id, "W", 1, timedelta(0))
    store.execute(
        job_id,
        existing(lambda j: fail(j, worker_id="W", now=_now())),
    )

    # When a duplicate of its Submitted message (version 1) reaches the scheduler
    async def deliver() -> bool:
        from services.scheduler.handlers import schedule_job

        async with AsyncJobStore(JobStore(store_settings)) as aio:
            return await schedule_job(aio, job_id, Cause("scheduler", "c"), version=1)

    # Then nothing is dispatched before the retry's timer
    assert asyncio.run(deliver()) is False
    assert store.get(job_id).status is Status.PENDING


def test_a_sweep_whose_due_list_was_read_before_the_job_moved_on_does_not_dispatch_the_retry(
    store: JobStore, store_settings: StoreSettings
) -> None:
    # Given a job due at once (a non-delayed timer), past the sweep's grace
    job_id = uuid.uuid4()
    store.execute(job_id, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id))
    timer = _row(store, "jobtrail_timers", job_id)
    assert timer is not None and not timer["delayed"] and timer["version"] == 1
    asyncio.run(asyncio.sleep(max(timer["left_s"], 0) + 0.05))

    def move_on() -> None:
        """The bus dispatches it, a worker claims it and fails fast: a retry 30 s ahead."""
        store.execute(job_id, scheduling(Cause("scheduler/bus", "c")))
        _start(store, job_id, "W", 1, timedelta(0))
        store.execute(
            job_id,
            existing(
                lambda j: fail(
                    j,
                    worker_id="W",
                    error_message="fast",
                    now=_now(),
                    backoff=Backoff(base_s=30.0, factor=1.0, cap_s=30.0, jitter=0.0),
                )
            ),
        )

    # When the timer sweep reads its due list, and the job moves on before the sweep's
    # transaction runs
    async def sweep() -> int:
        from services.scheduler.handlers import schedule_due

        async with AsyncJobStore(JobStore(store_settings)) as aio:
            read = aio.store.due_timers

            def read_then_move_on(limit: int, grace_s: float) -> list[Any]:
                due = [d for d in read(limit, grace_s) if d[0] == job_id]
                assert due, "the job is due"
                move_on()
                return due

            with mock.patch.object(aio.store, "due_timers", read_then_move_on):
                return await schedule_due(aio, Cause("scheduler/timer", "t"), 10_000, 0.0)

    # Then the sweep dispatches nothing: the retry waits for its own timer
    assert asyncio.run(sweep()) == 0
    job = store.get(job_id)
    assert (job.status, job.attempt) == (Status.PENDING, 1)
    timer = _row(store, "jobtrail_timers", job_id)
    assert timer is not None and timer["delayed"] and timer["left_s"] > 25, timer
    assert timer["version"] == len(store.history(job_id))


def test_a_timer_written_before_the_version_column_is_swept_unchecked(
    store: JobStore, store_settings: StoreSettings
) -> None:
    # Given a due timer from before the column (version NULL)
    job_id = uuid.uuid4()
    store.execute(job_id, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id))

    def forget_version(conn: Any) -> None:
        conn.execute("UPDATE jobtrail_timers SET version = NULL WHERE job_id = %s", [job_id])

    tables.on_connection(store, forget_version)
    assert (job_id, None) in store.due_timers(limit=10_000, grace_s=0)

    # When the sweep runs, then it dispatches the job
    async def sweep() -> int:
        from services.scheduler.handlers import schedule_due

        async with AsyncJobStore(JobStore(store_settings)) as aio:
            return await schedule_due(aio, Cause("scheduler/timer", "t"), 10_000, 0.0)

    assert asyncio.run(sweep()) >= 1
    assert store.get(job_id).status is Status.SCHEDULED
