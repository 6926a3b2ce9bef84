"""Retention without losing audits: move old final histories to compressed JSON Lines files.

An archive is two files: ``<name>.jsonl.gz`` (one stored event per line, in notification order,
with its chain hash, state base64-encoded byte for byte) and ``<name>.manifest.json`` (counts, the
notification range and the SHA-256 of the ``.gz`` file). The rows leave PostgreSQL only after both
files are written and fsynced, in one transaction that takes each job's lock and opts into the
maintenance path of the append-only trigger. ``jobtrail verify --archive`` merges archives back
into the chain and checkpoint checks, so a log with archived histories still verifies.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import sql

from shared.domain.job import Job
from shared.eventstore.locks import job_key
from shared.eventstore.rows import Problem, Row
from shared.eventstore.schema import CHECKPOINTS
from shared.eventstore.store import JobStore

ENDING_EVENTS = (Job.Completed, Job.Failed, Job.Cancelled, Job.LeaseExpired)
"""Events that can end a job (a LeaseExpired does when no retry is left: ``ends_job``)."""


class ArchiveError(RuntimeError):
    """The archive was not made; nothing left the table."""


@dataclass
class Bundle:
    """An archive read back: its rows and what was wrong with the files themselves."""

    path: Path
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def by_job(self) -> list[Row]:
        return sorted(self.rows, key=lambda r: (r.job_id, r.version))

    def entries(self) -> Iterator[tuple[int, bytes | None]]:
        for row in sorted(self.rows, key=lambda r: r.notification_id):
            yield row.notification_id, row.chain_hash


@dataclass(frozen=True)
class Archived:
    data: Path
    manifest: Path
    jobs: int
    events: int


def manifest_path(data: Path) -> Path:
    return data.with_name(data.name.removesuffix(".jsonl.gz") + ".manifest.json")


def read(path: Path) -> Bundle:
    """Reads an archive; a changed file (its digest differs from the manifest) is a problem."""
    bundle = Bundle(path)
    raw = path.read_bytes()
    try:
        manifest = json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        bundle.problems.append(Problem("archive", f"{path}: manifest unreadable ({exc})"))
        manifest = {}
    if manifest and hashlib.sha256(raw).hexdigest() != manifest.get("sha256"):
        bundle.problems.append(
            Problem("archive", f"{path}: the file's SHA-256 differs from its manifest")
        )
    try:
        lines = gzip.decompress(raw).decode().splitlines()
        bundle.rows = [Row.from_archive(json.loads(line)) for line in lines if line.strip()]
    except (OSError, EOFError, ValueError, KeyError) as exc:
        bundle.problems.append(Problem("archive", f"{path}: unreadable ({exc})"))
    if manifest and len(bundle.rows) != manifest.get("events"):
        bundle.problems.append(
            Problem(
                "archive",
                f"{path}: {len(bundle.rows)} events, the manifest says {manifest.get('events')}",
            )
        )
    return bundle


def _candidates(store: JobStore, before: datetime, limit: int) -> list[UUID]:
    """Jobs whose last event is final, older than ``before``, and covered by a checkpoint.

    Final is not forever (a FAILED job can be requeued), so the final event must be the job's
    last. Only rows the newest checkpoint covers leave the table: a later checkpoint computed
    without them would not match the log with its archives merged back.
    """
    topics = [get_topic(kind) for kind in ENDING_EVENTS]
    query = sql.SQL(
        "SELECT originator_id, originator_version, topic, state FROM {events} e "
        "WHERE topic = ANY(%s) "
        "AND notification_id <= (SELECT coalesce(max(notification_id), 0) FROM {checkpoints}) "
        "AND NOT EXISTS (SELECT 1 FROM {events} later WHERE later.originator_id = e.originator_id "
        "AND later.originator_version > e.originator_version) "
        "ORDER BY notification_id"
    ).format(events=store.table, checkpoints=sql.Identifier(CHECKPOINTS))
    chosen: list[UUID] = []
    with store.connection() as conn:
        for r in conn.execute(query, [topics]):
            event = store.decode(r)
            if event.timestamp >= before:
                break  # notification order is commit order: the rest are newer (within a skew)
            if not event.ends_job:  # a LeaseExpired with a retry to come
                continue
            chosen.append(r["originator_id"])
            if len(chosen) >= limit:
                break
    return chosen


def archive(store: JobStore, before: datetime, directory: Path, limit: int) -> Archived | None:
    """Archives up to ``limit`` final jobs finished before ``before``; None when there are none."""
    if before.tzinfo is None:
        raise ValueError("before must carry a time zone")
    jobs = _candidates(store, before, limit)
    if not jobs:
        return None
    table = store.table
    with store.connection() as conn:
        rows = [
            Row.from_db(r)
            for r in conn.execute(
                sql.SQL(
                    "SELECT * FROM {} WHERE originator_id = ANY(%s) ORDER BY notification_id"
                ).format(table),
                [jobs],
            )
        ]
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    data = (
        directory
        / f"jobtrail-{rows[0].notification_id}-{rows[-1].notification_id}-{stamp}.jsonl.gz"
    )
    payload = gzip.compress("".join(json.dumps(row.to_archive()) + "\n" for row in rows).encode())
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "before": before.isoformat(),
        "jobs": len(jobs),
        "events": len(rows),
        "first_notification_id": rows[0].notification_id,
        "last_notification_id": rows[-1].notification_id,
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    _write(data, payload)
    _write(manifest_path(data), json.dumps(manifest, indent=2).encode())
    try:
        with store.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL jobtrail.maintenance = 'on'")
            conn.execute(
                "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k",
                [sorted({job_key(job) for job in jobs})],
            )
            deleted = conn.execute(
                sql.SQL("DELETE FROM {} WHERE originator_id = ANY(%s)").format(table), [jobs]
            ).rowcount
            if deleted != len(rows):  # a history changed since it was read: keep everything
                raise ArchiveError(
                    f"archived {len(rows)} events but {deleted} matched; nothing was deleted"
                )
    except BaseException:
        data.unlink(missing_ok=True)  # the rows stay in the table: the files must not exist
        manifest_path(data).unlink(missing_ok=True)
        raise
    return Archived(data, manifest_path(data), len(jobs), len(rows))


def _write(path: Path, content: bytes) -> None:
    with path.open("wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())


def describe(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(manifest_path(path).read_text(encoding="utf-8")))
