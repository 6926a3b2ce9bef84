"""Builders for jobs in a given status, shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch
from uuid import UUID, uuid4

from shared.domain import Backoff, Cause, Job, Status
from shared.eventstore import JobStore, existing

CAUSE = Cause(actor="test:builder", correlation_id="corr-test")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
NO_JITTER = Backoff(base_s=1.0, factor=2.0, cap_s=60.0, jitter=0.0)


def fail(
    job: Job,
    *,
    worker_id: str = "w1",
    attempt: int = 1,
    retryable: bool = True,
    error_type: str = "E",
    error_message: str = "m",
    now: datetime = NOW,
    backoff: Backoff = NO_JITTER,
) -> Job:
    """Records a failed attempt of ``job`` (a retry while attempts remain, when retryable)."""
    job.fail_attempt(
        CAUSE,
        worker_id=worker_id,
        attempt=attempt,
        error_type=error_type,
        error_message=error_message,
        retryable=retryable,
        now=now,
        backoff=backoff,
    )
    return job


def job_in(
    status: Status, *, max_attempts: int = 3, cancel_requested: bool = False, **submit: Any
) -> Job:
    """A job brought to ``status`` through legal commands, with its pending events collected."""
    job = Job.submit(
        CAUSE, job_type="test.echo", payload={"n": 1}, max_attempts=max_attempts, **submit
    )
    if status is not Status.PENDING:
        job.schedule(CAUSE, NOW)
    if status in (Status.RUNNING, Status.COMPLETED, Status.FAILED):
        job.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=NOW)
        if cancel_requested:
            job.request_cancel(CAUSE)
    if status is Status.COMPLETED:
        job.complete(CAUSE, worker_id="w1", attempt=1, result={"ok": True})
    if status is Status.FAILED:
        fail(job, retryable=False, error_message="boom")
    if status is Status.CANCELLED:
        job.request_cancel(CAUSE)
    assert job.status is status
    job.collect_events()
    return job


def zulu(moment: datetime) -> str:
    """A time as ISO 8601 in UTC with a trailing Z, as a user types it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


Step = Callable[[Job], None]


def record(store: JobStore, steps: list[Step], cause: Cause = CAUSE, **submit: Any) -> UUID:
    """Writes a job to the log: submitted (with ``submit``), then one command per step."""
    job_id = uuid4()
    store.execute(
        job_id,
        lambda _: Job.submit(cause, job_type="t", payload={}, job_id=job_id, **submit),
    )
    for step in steps:
        store.execute(job_id, existing(step))
    return job_id


def record_a_retried_job(store: JobStore, cause: Cause = CAUSE) -> UUID:
    """Writes a job whose history has every common event: submitted, scheduled, started, an
    attempt failed, scheduled and started again, completed (7 events); returns its id."""
    now = datetime.now(UTC)
    steps: list[Step] = [
        lambda j: j.schedule(cause, now),
        lambda j: j.start(cause, worker_id="w1", attempt=1, lease_s=30, now=now),
        lambda j: j.fail_attempt(
            cause,
            worker_id="w1",
            attempt=1,
            error_type="ValueError",
            error_message="bad input row 7",
            retryable=True,
            now=now,
            backoff=NO_JITTER,
        ),
        lambda j: j.schedule(cause, now + timedelta(hours=1)),
        lambda j: j.start(cause, worker_id="w2", attempt=2, lease_s=30, now=now),
        lambda j: j.complete(cause, worker_id="w2", attempt=2, result={"rows": 7}),
    ]
    return record(store, steps, cause)


def unchecked_cause(**fields: Any) -> Cause:
    """A cause built around its own checks, as a row written by older code (or a bug) holds:
    the way to put a poison event in a test's log."""
    cause = object.__new__(Cause)
    for name, value in {**CAUSE.meta(), **fields}.items():
        object.__setattr__(cause, name, value)
    return cause


SKEW = (
    timedelta(0),  # Submitted by the submitter, whose clock is right
    timedelta(seconds=1),  # Scheduled by the scheduler
    timedelta(seconds=-59),  # Started by a worker whose clock is 60 s behind
    timedelta(seconds=-58),  # its AttemptFailed
    timedelta(seconds=3),  # Scheduled again
    timedelta(seconds=-57),  # Started by the same worker
    timedelta(seconds=-56),  # Completed
)
"""Each event's timestamp of ``record_a_skewed_job`` after its Submitted: it goes backwards."""


def record_a_skewed_job(store: JobStore, start: datetime) -> UUID:
    """Writes the seven events of ``record_a_retried_job`` stamped ``start + SKEW[n]`` (as
    processes with different clocks stamp them), through the store; returns the job's id."""
    stamps = iter([start + offset for offset in SKEW])
    with patch.object(Job.Event, "create_timestamp", staticmethod(lambda: next(stamps))):
        return record_a_retried_job(store)


def prefix_at(events: list[Job.Event], at: datetime) -> list[Job.Event]:
    """What docs/audit.md defines as the history at ``at``: the longest prefix whose events
    are all stamped at or before ``at`` (written here without the store's code)."""
    n = 0
    while n < len(events) and all(e.timestamp <= at for e in events[: n + 1]):
        n += 1
    return events[:n]


def insert_row(store: JobStore, job_id: UUID, topic: str, state: bytes) -> None:
    """Version 1 of a job written around the store (no chain hash): a damaged or planted row."""
    from psycopg import sql

    with store.recorder.datastore.get_connection() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "VALUES (%s, 1, %s, %s)"
            ).format(store.table),
            [job_id, topic, state],
        )
