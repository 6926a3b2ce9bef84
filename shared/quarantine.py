"""Quarantine: an event a follower can never process is recorded and stepped past.

The log is append-only, so an event that cannot become a bus message (a value its contract
refuses, text that cannot be encoded, a row that does not decode) would stop the relay at the
same position for good, and every job behind it with it. Instead the follower records it once in
``jobtrail_quarantine`` (unique per stage and notification id, so a restart does not record it
twice), counts it (``jobtrail_quarantined_total{stage}``) and goes on. The relay also FAILs the
job (``Job.quarantine``) when the job still stands at that event: nothing would ever move it
otherwise. A publish that fails for a reason that can pass (broker away, confirm nacked or timed
out, unroutable) is not poison and is retried as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from shared.domain import Cause, Job, JobError
from shared.domain.cause import describe, printable
from shared.domain.status import TERMINAL
from shared.eventstore import AsyncJobStore, JobStore, Undecodable, existing, tables
from shared.metrics import QUARANTINED

log = logging.getLogger(__name__)

MAX_ERROR = 2000


@dataclass(frozen=True)
class Poison:
    """One event a follower cannot process, and why."""

    stage: str  # relay | projection
    notification_id: int
    job_id: UUID | None
    version: int | None
    event_type: str
    error: str

    @classmethod
    def undecodable(cls, stage: str, row: Undecodable) -> Poison:
        """A row of the log that does not decode into an event."""
        return cls(stage, row.notification_id, row.job_id, row.version, row.topic, row.error)

    @classmethod
    def of(cls, stage: str, notification_id: int, event: Job.Event, exc: BaseException) -> Poison:
        """An event the follower failed on, and the error it met."""
        return cls(
            stage,
            notification_id,
            event.originator_id,
            event.originator_version,
            type(event).__name__,
            describe(exc),
        )


def insert(conn: psycopg.Connection[Any], poison: Poison, action: str) -> bool:
    """Records the poison unless this stage recorded that notification before; True if new."""
    row = conn.execute(
        "INSERT INTO jobtrail_quarantine "
        "(stage, notification_id, job_id, version, event_type, error, action) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (stage, notification_id) DO NOTHING RETURNING id",
        [
            poison.stage,
            poison.notification_id,
            poison.job_id,
            poison.version,
            poison.event_type,
            printable(poison.error)[:MAX_ERROR],
            action,
        ],
    ).fetchone()
    return row is not None


COLUMNS = (
    "id",
    "at",
    "stage",
    "notification_id",
    "job_id",
    "version",
    "event_type",
    "error",
    "action",
)
"""What a quarantined event's row says (``GET /v1/quarantine``)."""


def rows(conn: psycopg.Connection[Any], job_id: UUID | None, limit: int) -> list[dict[str, Any]]:
    """Recorded poison events, newest first; only the job's when ``job_id`` is given."""
    return tables.newest_rows(conn, "jobtrail_quarantine", COLUMNS, job_id, limit)


def recorded(store: JobStore, job_id: UUID | None, limit: int) -> list[dict[str, Any]]:
    return tables.on_connection(store, rows, job_id, limit)


async def fail_job(store: AsyncJobStore, poison: Poison, actor: str) -> str:
    """FAILs the poison's job if it still stands at the poison event; returns what was done:
    ``job_failed``, ``job_final`` (the poison event ended the job, e.g. a LeaseExpired with no
    retry: nothing to fail), ``job_moved_on`` (past the event), ``none`` (no job named)."""
    if poison.job_id is None or poison.version is None:
        return "none"
    cause = Cause(actor, f"quarantine/{poison.notification_id}", reason="poison event")
    final = False

    def change(job: Job) -> None:
        nonlocal final
        final = job.version == poison.version and job.status in TERMINAL
        job.quarantine(
            cause,
            version=poison.version or 0,
            notification_id=poison.notification_id,
            error=poison.error,
        )

    try:
        await store.execute(poison.job_id, existing(change))
    except JobError as exc:  # moved on past the event, or it ended the job: it harmed nothing
        log.info("quarantine: job %s not failed: %s", poison.job_id, exc)
        return "job_final" if final else "job_moved_on"
    return "job_failed"


async def record(store: AsyncJobStore, poison: Poison, action: str) -> None:
    """Records and counts the poison (once per stage and notification), logging it."""
    log.error(
        "%s: quarantined notification %d (job %s v%s, %s): %s; %s",
        poison.stage,
        poison.notification_id,
        poison.job_id,
        poison.version,
        poison.event_type,
        poison.error,
        action,
    )
    if await store.run_sync(tables.on_connection, store.store, insert, poison, action):
        QUARANTINED.labels(poison.stage).inc()
