"""Tables kept in step with the log inside the appending transaction: timers and leases.

They are derived state, never a second source of truth: every row follows from the events, and
both are written in the same transaction as the events that imply them, so a crash cannot leave a
PENDING job without a timer or a RUNNING job without a lease.

- ``jobtrail_timers``: one row per PENDING job, due at ``due_at``. ``delayed`` marks jobs that were
  not due when they became PENDING (run_at, retry backoff): only the scheduler's timer sweep
  dispatches those; jobs due at once are dispatched from the bus, and swept only as a safety net.
  ``version`` is that of the event that wrote the timer (NULL in rows written before the column
  existed): the sweep dispatches the job only at that version, so a due list read before the job
  moved on (dispatched, failed, a new retry timer) cannot dispatch the next retry early.
- ``jobtrail_leases``: one row per RUNNING job with its worker, attempt and expiry; workers renew
  it by heartbeat, the scheduler's sweep expires it.
- ``jobtrail_dispatches``: one row per SCHEDULED job with its attempt and when its work message
  was last sent; the scheduler's sweep sends it again when no worker claimed it in time.

Every time in these tables that another process compares with ``now()`` is PostgreSQL's own
clock (``clock_timestamp()`` when the row is written): event timestamps come from the writer's
clock, so a lease or a retry delay is taken from an event as a length (``lease_expires_at -
timestamp``, ``retry_at - timestamp``, both on the writer's clock) and added to the database's
time. A worker whose clock is a minute off then still writes a lease of the right length.

Outside the log, and not derived from it: ``jobtrail_dead_letters``, one row per message a
consumer rejected to the dead-letter queue (never an event: it must not move a job), and
``jobtrail_quarantine``, one row per event of the log a follower could not process
(``shared.quarantine``). The DDL of every table here is in ``shared.eventstore.schema``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql

from shared.domain.job import Job

T = TypeVar("T")


class Connects(Protocol):
    """Anything that lends a pooled connection (``JobStore.connection``)."""

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


_UPSERT_TIMER_AT = (  # a time the user chose (run_at)
    "INSERT INTO jobtrail_timers (job_id, due_at, delayed, version) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (job_id) DO UPDATE SET due_at = EXCLUDED.due_at, delayed = EXCLUDED.delayed, "
    "version = EXCLUDED.version"
)
_UPSERT_TIMER_IN = (  # a delay (none, or a retry's backoff) from the database's time
    "INSERT INTO jobtrail_timers (job_id, due_at, delayed, version) "
    "VALUES (%s, clock_timestamp() + %s::interval, %s, %s) "
    "ON CONFLICT (job_id) DO UPDATE SET due_at = EXCLUDED.due_at, delayed = EXCLUDED.delayed, "
    "version = EXCLUDED.version"
)
_DELETE_TIMER = "DELETE FROM jobtrail_timers WHERE job_id = %s"
_UPSERT_LEASE = (
    "INSERT INTO jobtrail_leases (job_id, attempt, worker_id, expires_at, cancel_requested) "
    "VALUES (%s, %s, %s, clock_timestamp() + %s::interval, %s) "
    "ON CONFLICT (job_id) DO UPDATE SET attempt = EXCLUDED.attempt, "
    "worker_id = EXCLUDED.worker_id, expires_at = EXCLUDED.expires_at, "
    "cancel_requested = EXCLUDED.cancel_requested"
)
_DELETE_LEASE = "DELETE FROM jobtrail_leases WHERE job_id = %s"
_CANCEL_LEASE = "UPDATE jobtrail_leases SET cancel_requested = true WHERE job_id = %s"
_UPSERT_DISPATCH = (
    "INSERT INTO jobtrail_dispatches (job_id, attempt, sent_at) VALUES (%s, %s, clock_timestamp()) "
    "ON CONFLICT (job_id) DO UPDATE SET attempt = EXCLUDED.attempt, sent_at = EXCLUDED.sent_at, "
    "resends = 0"
)
_DELETE_DISPATCH = "DELETE FROM jobtrail_dispatches WHERE job_id = %s"

_ENDS_LEASE = (Job.Completed, Job.AttemptFailed, Job.Failed, Job.LeaseExpired, Job.Cancelled)

Op = tuple[str, tuple[Any, ...]]


def _timer_op(event: Job.Event) -> Op | None:
    """``delayed`` is decided as the scheduler's bus subscriber decides it: on the writer's clock
    (the event's own timestamp), so a job it leaves to the timer is always swept on time."""
    job_id = event.originator_id
    version = event.originator_version
    if isinstance(event, Job.Submitted):
        if event.run_at is None:
            return _UPSERT_TIMER_IN, (job_id, timedelta(0), False, version)
        return _UPSERT_TIMER_AT, (job_id, event.run_at, event.run_at > event.timestamp, version)
    if isinstance(event, Job.Requeued):
        return _UPSERT_TIMER_IN, (job_id, timedelta(0), False, version)
    if isinstance(event, (Job.AttemptFailed, Job.LeaseExpired)) and event.retry_at is not None:
        delay = max(event.retry_at - event.timestamp, timedelta(0))
        return _UPSERT_TIMER_IN, (job_id, delay, delay > timedelta(0), version)
    if isinstance(event, (Job.Scheduled, Job.Cancelled, Job.Quarantined)):
        return _DELETE_TIMER, (job_id,)
    return None


def _lease_op(event: Job.Event, previous: Op | None) -> Op | None:
    job_id = event.originator_id
    if isinstance(event, Job.Started):
        return _UPSERT_LEASE, (
            job_id,
            event.attempt,
            event.worker_id,
            event.lease_expires_at - event.timestamp,  # the lease's length, clock-free
            False,
        )
    if isinstance(event, Job.CancelRequested):
        if previous is not None and previous[0] == _UPSERT_LEASE:  # started in this very batch
            return _UPSERT_LEASE, (*previous[1][:4], True)
        return _CANCEL_LEASE, (job_id,)
    if isinstance(event, _ENDS_LEASE):
        return _DELETE_LEASE, (job_id,)
    return previous


def _dispatch_op(event: Job.Event) -> Op | None:
    job_id = event.originator_id
    if isinstance(event, Job.Scheduled):
        return _UPSERT_DISPATCH, (job_id, event.attempt)
    if isinstance(event, (Job.Started, Job.Cancelled, Job.Quarantined)):  # out of SCHEDULED
        return _DELETE_DISPATCH, (job_id,)
    return None


def maintain(conn: psycopg.Connection[Any], events: Sequence[Job.Event]) -> None:
    """Applies what the new events imply to timers, leases and dispatches, in the caller's
    transaction.

    Only the last effect per job and table counts, so statements of one kind can be sent
    together without reordering one job's changes.
    """
    timers: dict[Any, Op] = {}
    leases: dict[Any, Op] = {}
    dispatches: dict[Any, Op] = {}
    created: set[Any] = set()  # jobs submitted in this batch: no timer row before it
    for event in events:
        job_id = event.originator_id
        if isinstance(event, Job.Submitted):
            created.add(job_id)
        timer = _timer_op(event)
        if timer is None:
            pass
        elif timer[0] == _DELETE_TIMER and job_id in created:
            timers.pop(job_id, None)  # submitted and dispatched at once: no row to write
        else:
            timers[job_id] = timer
        lease = _lease_op(event, leases.get(job_id))
        if lease is not None:
            leases[job_id] = lease
        dispatch = _dispatch_op(event)
        if dispatch is not None:
            dispatches[job_id] = dispatch
    ops = [*timers.values(), *leases.values(), *dispatches.values()]
    with conn.cursor() as cur:
        for query in dict.fromkeys(q for q, _ in ops):
            cur.executemany(query, [args for q, args in ops if q == query])


def due_timers(
    conn: psycopg.Connection[Any], limit: int, grace_s: float
) -> list[tuple[Any, int | None]]:
    """Jobs due now, with the version that wrote their timer (None for rows older than the
    column): delayed ones at their time, the rest only when the bus missed them."""
    rows = conn.execute(
        "SELECT job_id, version FROM jobtrail_timers WHERE due_at <= now() "
        "AND (delayed OR due_at <= now() - make_interval(secs => %s)) "
        "ORDER BY due_at LIMIT %s",
        [grace_s, limit],
    ).fetchall()
    return [(row["job_id"], row["version"]) for row in rows]


def expired_leases(conn: psycopg.Connection[Any], limit: int) -> list[tuple[Any, int]]:
    """Running jobs whose lease ran out, with the attempt that held it."""
    rows = conn.execute(
        "SELECT job_id, attempt FROM jobtrail_leases WHERE expires_at < now() "
        "ORDER BY expires_at LIMIT %s",
        [limit],
    ).fetchall()
    return [(row["job_id"], row["attempt"]) for row in rows]


def renew_leases(
    conn: psycopg.Connection[Any],
    worker_id: str,
    attempts: Sequence[tuple[Any, int]],
    lease_s: float,
) -> dict[tuple[Any, int], bool]:
    """Extends this worker's unexpired leases of exactly these (job id, attempt) pairs; returns
    {(job id, attempt): cancel requested} of those kept.

    An expired lease is never renewed, so a job the sweep may be taking away stays taken; and a
    lease of another attempt of the same job (this worker may run both, when the first lost its
    lease while still running) is not renewed on the stale attempt's behalf.
    """
    rows = conn.execute(
        "UPDATE jobtrail_leases AS l SET expires_at = now() + make_interval(secs => %s) "
        "FROM unnest(%s::uuid[], %s::integer[]) AS held(job_id, attempt) "
        "WHERE l.job_id = held.job_id AND l.attempt = held.attempt AND l.worker_id = %s "
        "AND l.expires_at > now() RETURNING l.job_id, l.attempt, l.cancel_requested",
        [lease_s, [j for j, _ in attempts], [a for _, a in attempts], worker_id],
    ).fetchall()
    return {(row["job_id"], row["attempt"]): row["cancel_requested"] for row in rows}


def cancel_requests(conn: psycopg.Connection[Any], worker_id: str) -> list[tuple[Any, int]]:
    """(job id, attempt) of the attempts this worker runs whose cancellation was requested."""
    rows = conn.execute(
        "SELECT job_id, attempt FROM jobtrail_leases WHERE worker_id = %s AND cancel_requested",
        [worker_id],
    ).fetchall()
    return [(row["job_id"], row["attempt"]) for row in rows]


def overdue_dispatches(
    conn: psycopg.Connection[Any], limit: int, deadline_s: float
) -> list[tuple[Any, int]]:
    """SCHEDULED jobs no worker claimed within ``deadline_s`` of their last work message; marks
    them sent now. Each resend doubles the wait (up to 64 deadlines), so a backlog that is merely
    slow (messages waiting in a long queue) is not flooded with copies of itself."""
    rows = conn.execute(
        "UPDATE jobtrail_dispatches SET sent_at = now(), resends = resends + 1 WHERE job_id IN ("
        "SELECT job_id FROM jobtrail_dispatches "
        "WHERE sent_at <= now() - make_interval(secs => %s * power(2, least(resends, 6))) "
        "ORDER BY sent_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING job_id, attempt",
        [deadline_s, limit],
    ).fetchall()
    return [(row["job_id"], row["attempt"]) for row in rows]


def record_dead_letter(
    conn: psycopg.Connection[Any], row: dict[str, Any], replace: bool = False
) -> None:
    """Records one dead letter (queue, reason, job_id, message_id, correlation_id, error, body)
    once per ``key`` (one death of one message): a second write of the same death does nothing,
    or, with ``replace`` (the consumer's own record, which knows the error), sets its reason
    and error."""
    on_conflict = (
        "DO UPDATE SET reason = EXCLUDED.reason, error = EXCLUDED.error"
        if replace
        else "DO NOTHING"
    )
    conn.execute(
        "INSERT INTO jobtrail_dead_letters "
        "(queue, reason, job_id, message_id, correlation_id, error, body, letter_key) "
        "VALUES (%(queue)s, %(reason)s, %(job_id)s, %(message_id)s, %(correlation_id)s, "
        "%(error)s, %(body)s, %(key)s) ON CONFLICT (letter_key) " + on_conflict,
        row,
    )


def newest_rows(
    conn: psycopg.Connection[Any], table: str, columns: Sequence[str], job_id: Any, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows of a record kept beside the log (dead letters, quarantined events),
    newest first; only those naming ``job_id`` when given."""
    query = sql.SQL(
        "SELECT {} FROM {} WHERE %(job_id)s::uuid IS NULL OR job_id = %(job_id)s "
        "ORDER BY id DESC LIMIT %(limit)s"
    ).format(sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table))
    rows = conn.execute(query, {"job_id": job_id, "limit": limit}).fetchall()
    return [dict(row) for row in rows]


def on_connection(store: Connects, fn: Callable[..., T], *args: Any) -> T:
    """Runs ``fn(conn, *args)`` on a pooled connection of the store (autocommit)."""
    with store.connection() as conn:
        return fn(conn, *args)


def last_events(
    conn: psycopg.Connection[Any], table: sql.Composable, job_ids: Sequence[Any]
) -> list[dict[str, Any]]:
    """The last event row of each job (with its notification id), in one query."""
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT ON (originator_id) notification_id, originator_id, "
            "originator_version, topic, state FROM {} WHERE originator_id = ANY(%s) "
            "ORDER BY originator_id, originator_version DESC"
        ).format(table),
        [list(job_ids)],
    ).fetchall()
    return [dict(row) for row in rows]
