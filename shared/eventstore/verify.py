"""Verification of the log: every job's hash chain, the log head against every checkpoint, and
the checkpoints' own chain, in one consistent snapshot.

``verify_log`` streams the events table (server-side cursors: memory stays constant in the
number of events) and merges archived histories (``shared.eventstore.archive``) back in where
their rows left the table; ``check_chains``, ``check_head`` and ``check_checkpoint_chain`` are the
checks themselves, over rows and checkpoints from anywhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from shared.eventstore import archive
from shared.eventstore.chain import GENESIS, event_hash, head_hash
from shared.eventstore.checkpoints import Checkpoint, checkpoints, read_checkpoint_file
from shared.eventstore.rows import Problem, Row
from shared.eventstore.schema import EVENTS
from shared.postgres import Target, connect


@dataclass
class Report:
    """What ``verify_log`` checked and found."""

    jobs: int = 0
    events: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_chains(rows: Iterable[Row], report: Report) -> None:
    """Recomputes each job's chain; ``rows`` must come grouped by job in version order.

    Names the first bad version of each job: a gap (deleted row), a missing hash (a row written
    around jobtrail), or a hash that does not match (a row edited, inserted or moved).
    """
    job: UUID | None = None
    expected, previous, broken = 1, GENESIS, False
    for row in rows:
        report.events += 1
        if row.job_id != job:
            job, expected, previous, broken = row.job_id, 1, GENESIS, False
            report.jobs += 1
        if broken:
            continue
        problem = None
        if row.version != expected:
            problem = Problem(
                "gap",
                f"expected version {expected}, found {row.version}: "
                f"version(s) {expected}..{row.version - 1} deleted",
                row.job_id,
                expected,
                row.notification_id,
            )
        elif row.chain_hash is None:
            problem = Problem(
                "unchained",
                "the row has no chain hash: it was written around jobtrail",
                row.job_id,
                row.version,
                row.notification_id,
            )
        else:
            computed = event_hash(previous, row.job_id, row.version, row.topic, row.state)
            if computed != row.chain_hash:
                problem = Problem(
                    "hash",
                    "the chain hash does not match the row: it was edited, inserted or moved",
                    row.job_id,
                    row.version,
                    row.notification_id,
                )
            previous = computed
        if problem is not None:
            report.problems.append(problem)
            broken = True
        expected += 1


def check_head(
    entries: Iterable[tuple[int, bytes | None]],
    marks: Iterable[Checkpoint],
    report: Report,
    key: bytes | None = None,
) -> None:
    """Recomputes the log head over (notification id, chain hash) in order; compares checkpoints.

    After a mismatch the head restarts from that checkpoint, so each damaged interval is named.
    """
    ordered = sorted(marks, key=lambda c: (c.notification_id, c.source))
    head, count, start = GENESIS, 0, 0
    stream = iter(entries)
    pending: tuple[int, bytes | None] | None = next(stream, None)
    restart: Checkpoint | None = None
    last_id: int | None = None
    holes: list[str] = []  # notification ids absent in the current interval
    for mark in ordered:
        if restart is not None and restart.notification_id < mark.notification_id:
            head, count, restart = restart.head, restart.events, None  # localise the next interval
            holes = []
        report.checkpoints += 1
        if key is not None and not mark.signed_by(key):
            report.problems.append(
                Problem(
                    "signature",
                    f"checkpoint at notification {mark.notification_id} ({mark.source}) has no "
                    "valid signature: forged, or signed with another key",
                    notification_id=mark.notification_id,
                )
            )
        while pending is not None and pending[0] <= mark.notification_id:
            if pending[0] != last_id:  # an archived row still in the table is counted once
                gap = (last_id or 0) + 1, pending[0] - 1
                if gap[0] <= gap[1] and len(holes) < 10:
                    holes.append(str(gap[0]) if gap[0] == gap[1] else f"{gap[0]}..{gap[1]}")
                head = head_hash(head, pending[0], pending[1] or GENESIS)
                count += 1
                last_id = pending[0]
            pending = next(stream, None)
        tail = (last_id or 0) + 1, mark.notification_id  # the checkpoint names its last event
        if tail[0] <= tail[1] and len(holes) < 10:
            holes.append(str(tail[0]) if tail[0] == tail[1] else f"{tail[0]}..{tail[1]}")
        if head != mark.head or count != mark.events:
            detail = (
                f"log head at notification {mark.notification_id} differs from the checkpoint "
                f"({mark.source}, {mark.created_at}): an event in notifications "
                f"{start + 1}..{mark.notification_id} was edited, deleted, inserted or reordered"
            )
            if count != mark.events:
                detail += f" ({count} events there now, {mark.events} when checkpointed)"
            if count < mark.events and holes:
                detail += (
                    "; notification ids absent there (deleted rows, or transactions that rolled "
                    f"back): {', '.join(holes)}"
                )
            report.problems.append(
                Problem("checkpoint", detail, notification_id=mark.notification_id)
            )
            restart = restart or mark  # copies at the same id are judged by the same head
        if restart is None:
            holes = []
        start = mark.notification_id


def check_checkpoint_chain(
    stored: Iterable[Checkpoint], copied: Iterable[Checkpoint], report: Report
) -> None:
    """The database's checkpoints follow one another (numbers 1, 2, 3 ..., each naming its
    predecessor's digest; unchained ones only before the first chained one), and every chained
    checkpoint of the file copy is in the database as written. The file may skip numbers (a
    checkpoint written where no file was configured), so only the database's chain must be
    unbroken; the file's lines anchor it."""
    by_seq: dict[int, Checkpoint] = {}
    before: Checkpoint | None = None
    for mark in sorted(stored, key=lambda c: c.notification_id):
        if mark.seq is None:
            if before is not None and before.seq is not None:
                report.problems.append(
                    Problem(
                        "checkpoint-chain",
                        f"checkpoint at notification {mark.notification_id} is unchained but "
                        "comes after chained ones: inserted",
                        notification_id=mark.notification_id,
                    )
                )
            before = mark
            continue
        expected = (before.seq or 0) + 1 if before else 1
        if mark.seq != expected or mark.previous != (before.digest if before else GENESIS):
            missing = (
                f"checkpoint {expected}"
                if mark.seq == expected + 1
                else f"checkpoints {expected}..{mark.seq - 1}"
                if mark.seq > expected
                else "the checkpoint before it"
            )
            report.problems.append(
                Problem(
                    "checkpoint-chain",
                    f"checkpoint {mark.seq} at notification {mark.notification_id} (database) "
                    f"does not follow the one before it: {missing} deleted or replaced",
                    notification_id=mark.notification_id,
                )
            )
        by_seq[mark.seq] = mark
        before = mark
    for mark in copied:
        if mark.seq is None:
            continue  # an unchained line is still compared with the log head
        twin = by_seq.get(mark.seq)
        if twin is None or twin.digest != mark.digest:
            report.problems.append(
                Problem(
                    "checkpoint-chain",
                    f"checkpoint {mark.seq} at notification {mark.notification_id} of the "
                    f"{mark.source} is "
                    + ("missing from" if twin is None else "not the one in")
                    + " the database: deleted or replaced there",
                    notification_id=mark.notification_id,
                )
            )


def _stream(
    conn: psycopg.Connection[Any], query: sql.Composed, name: str
) -> Iterator[dict[str, Any]]:
    with conn.cursor(name=name, row_factory=dict_row) as cur:
        cur.itersize = 5000
        cur.execute(query)
        yield from cur


def verify_log(
    target: Target,
    *,
    key: bytes | None = None,
    checkpoint_file: Path | None = None,
    archives: Iterable[Path] = (),
    events: str = EVENTS,
) -> Report:
    """Checks every chain and the head against every checkpoint, in one consistent snapshot.

    Memory stays constant in the number of events (server-side cursors); archived histories
    (``shared.eventstore.archive``) are merged in where their rows left the table.
    """
    report = Report()
    archived = [archive.read(path) for path in archives]
    for bundle in archived:
        report.problems.extend(bundle.problems)
        check_chains(bundle.by_job(), report)
    table = sql.Identifier(events)
    # Before the snapshot: each line was written after its checkpoint committed, so the snapshot
    # sees every row a line covers (read later, a new line could name rows it cannot see).
    from_file = read_checkpoint_file(checkpoint_file) if checkpoint_file is not None else []
    with connect(target, autocommit=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            check_chains(
                (
                    Row.from_db(r)
                    for r in _stream(
                        conn,
                        sql.SQL(
                            "SELECT * FROM {} ORDER BY originator_id, originator_version"
                        ).format(table),
                        "jobtrail_verify_chains",
                    )
                ),
                report,
            )
            stored = checkpoints(conn)
            check_checkpoint_chain(stored, from_file, report)
            marks = stored + from_file
            live = (
                (r["notification_id"], bytes(r["chain_hash"]) if r["chain_hash"] else None)
                for r in _stream(
                    conn,
                    sql.SQL(
                        "SELECT notification_id, chain_hash FROM {} ORDER BY notification_id"
                    ).format(table),
                    "jobtrail_verify_head",
                )
            )
            merged = heapq.merge(live, *(bundle.entries() for bundle in archived))
            check_head(merged, marks, report, key)
    return report
