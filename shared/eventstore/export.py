"""Audit reads of the log: exported event records, point-in-time state, time-range streams.

Every exported event, of one job or of a time range, is ``shared.views.event_record`` of its
row: the one record of an event, which the API and the CLI show too, and the one place where a
field (a chain hash, say) is added to what auditors receive.

A time range is filtered in PostgreSQL on the timestamp inside each event's JSON state, read in
keyset pages over ``notification_id`` (commit order). Timestamps are taken by each writer before
its commit, from its own clock, so they are not monotonic in notification id: bounding the scan
by notification id would miss events written by a writer whose clock is behind. Scanning every
row (up to the last id when the export began) and filtering in SQL is exact; only matching rows
cross the wire, each page is a short query of its own (no long transaction, nothing held
between pages), and memory stays at one page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import sql

from shared.domain.errors import JobNotFoundError
from shared.domain.job import Job
from shared.eventstore import archive
from shared.eventstore.store import JobStore
from shared.views import event_record

EVENT_TYPES: dict[str, type[Job.Event]] = {
    cls.__name__: cls
    for cls in vars(Job).values()
    if isinstance(cls, type)
    and issubclass(cls, Job.Event)
    and cls not in (Job.Event, Job.Created)  # Created: eventsourcing's default; jobs use Submitted
}
"""Every job event type by its name (``Submitted``, ``Started`` ...)."""

_TIMESTAMP = "(convert_from(state, 'UTF8')::jsonb #>> '{timestamp,_data_}')::timestamptz"


class PointInTimeError(JobNotFoundError):
    """The job exists, but not at the version or time asked for."""

    def __init__(self, job_id: UUID, detail: str) -> None:
        super().__init__(job_id)
        self.args = (f"job {job_id}: {detail}",)


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet evaluate a cell (OWASP, "CSV Injection")."""


def csv_cell(value: Any) -> Any:
    """``value`` made inert for a spreadsheet: a text cell that starts with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a leading ``'`` (so ``=HYPERLINK(...)`` stays text).
    Numbers and everything else are left as they are; JSON exports are never escaped."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """An exported record as a CSV row: ``data`` as a JSON string, every cell made inert."""
    row = record | {"data": json.dumps(record["data"], sort_keys=True)}
    return {name: csv_cell(value) for name, value in row.items()}


def state_at_version(store: JobStore, job_id: UUID, version: int) -> Job:
    """The job after its first ``version`` events; PointInTimeError past its last version."""
    if version < 1:
        raise ValueError("version must be >= 1")
    job = store.get(job_id, version=version)  # JobNotFoundError when unknown
    if job.version != version:
        raise PointInTimeError(
            job_id, f"has {job.version} version(s); there is no version {version}"
        )
    return job


def state_at_time(store: JobStore, job_id: UUID, at: datetime) -> Job:
    """The job as it was at ``at`` (time-zone aware); PointInTimeError before it was submitted."""
    try:
        return store.get_at(job_id, at)
    except JobNotFoundError:
        first = store.history(job_id)[0]  # JobNotFoundError when the job does not exist at all
        raise PointInTimeError(
            job_id,
            f"did not exist yet at {at.isoformat()}; "
            f"it was submitted at {first.timestamp.isoformat()}",
        ) from None


@dataclass(frozen=True)
class RangeFilter:
    """Events with ``since <= timestamp < until`` (either open), of ``types``, by ``actor``."""

    since: datetime | None = None
    until: datetime | None = None
    types: Sequence[str] = ()
    actor: str | None = None


class EventExport:
    """Reads the log for audit exports, straight from PostgreSQL."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._columns = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state, chain_hash "
            "FROM {} "
        ).format(store.table)

    def job_records(self, job_id: UUID) -> list[dict[str, Any]]:
        """Every event of one job as records, in version order; JobNotFoundError when none."""
        query = self._columns + sql.SQL("WHERE originator_id = %s ORDER BY originator_version")
        with self.store.connection() as conn:
            rows = conn.execute(query, [job_id]).fetchall()
        if not rows:
            raise JobNotFoundError(job_id)
        return [self._record(row) for row in rows]

    def range_records(self, where: RangeFilter, page: int = 5000) -> Iterator[dict[str, Any]]:
        """Matching events of every job in commit order, streamed one page at a time.

        Covers events committed before the call; later ones are left to the next export.
        """
        unknown = [t for t in where.types if t not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event type(s) {unknown}; known: {sorted(EVENT_TYPES)}")
        conditions = [
            sql.SQL("notification_id > %(after)s"),
            sql.SQL("notification_id <= %(last)s"),
        ]
        params: dict[str, Any] = {"last": self.store.max_notification_id(), "page": page}
        if where.since is not None:
            conditions.append(sql.SQL(_TIMESTAMP + " >= %(since)s"))
            params["since"] = where.since
        if where.until is not None:
            conditions.append(sql.SQL(_TIMESTAMP + " < %(until)s"))
            params["until"] = where.until
        if where.types:
            conditions.append(sql.SQL("topic = ANY(%(topics)s)"))
            params["topics"] = [get_topic(EVENT_TYPES[t]) for t in where.types]
        if where.actor is not None:
            conditions.append(sql.SQL("convert_from(state, 'UTF8')::jsonb ->> 'actor' = %(actor)s"))
            params["actor"] = where.actor
        query = (
            self._columns
            + sql.SQL("WHERE ")
            + sql.SQL(" AND ").join(conditions)
            + sql.SQL(" ORDER BY notification_id LIMIT %(page)s")
        )
        after = 0
        while True:
            with self.store.connection() as conn:
                rows = conn.execute(query, params | {"after": after}).fetchall()
            for row in rows:
                yield self._record(row)
            if len(rows) < page:
                return
            after = rows[-1]["notification_id"]

    def archived_job_records(
        self, job_id: UUID, paths: Sequence[Path]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """One job's history read back from archive files (``jobtrail archive``), with what is
        wrong with those files (a digest that does not match its manifest); JobNotFoundError
        when no archive holds the job."""
        rows, problems = [], []
        for path in paths:
            bundle = archive.read(path)
            problems += [str(problem) for problem in bundle.problems]
            rows += [row for row in bundle.rows if row.job_id == job_id]
        if not rows:
            raise JobNotFoundError(job_id)
        records = [self._record(row.to_db()) for row in sorted(rows, key=lambda r: r.version)]
        return records, problems

    def _record(self, row: dict[str, Any]) -> dict[str, Any]:
        chain = bytes(row["chain_hash"]) if row["chain_hash"] is not None else None
        return event_record(row["notification_id"], self.store.decode(row), chain)
