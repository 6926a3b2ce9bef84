"""Append-only by construction, checkpoints of the log head, and verification of the log.

- ``create``: the ``chain_hash`` column, the ``jobtrail_checkpoints`` table, and triggers that
  refuse UPDATE, DELETE and TRUNCATE on both tables for every role, the owner included, unless
  the owner (or a member of the owner's role) opted into the maintenance path in that
  transaction (``SET LOCAL jobtrail.maintenance = 'on'``, used only by ``jobtrail archive``); any
  role may set the variable, so the trigger checks who set it.
- ``grant``: what a service role needs, and no more (see docs/audit.md).
- ``write_checkpoint``: extends the running log head over new events and stores it, chained to
  the previous checkpoint; refuses to sign when the file copy knows checkpoints the database lost.
- ``verify_log``: recomputes every job's chain and the log head, and compares the head with each
  checkpoint (from the database and, independently, from a checkpoint file).
"""

from __future__ import annotations

import base64
import heapq
import hmac
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from shared.eventstore.chain import (
    GENESIS,
    checkpoint_digest,
    event_hash,
    head_hash,
    sign,
    sign_digest,
)

EVENTS = "jobtrail_events"
CHECKPOINTS = "jobtrail_checkpoints"
KEYS = "jobtrail_api_keys"  # shared/keys.py TABLE (not imported: keys.py is the API's module)
_CHECKPOINT_LOCK = 7261030

_FUNCTION = """
CREATE OR REPLACE FUNCTION jobtrail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('jobtrail.maintenance', true) = 'on'
     AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
  THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'history is never changed; archiving is the only maintenance path '
                 '(docs/audit.md)';
END $$
"""


def _ddl(events: str) -> list[sql.Composed]:
    table = sql.Identifier(events)
    statements = [
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS chain_hash bytea").format(table),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (notification_id bigint PRIMARY KEY, "
            "head bytea NOT NULL, events bigint NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now(), signature bytea)"
        ).format(sql.Identifier(CHECKPOINTS)),
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS seq bigint").format(
            sql.Identifier(CHECKPOINTS)
        ),
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS previous bytea").format(
            sql.Identifier(CHECKPOINTS)
        ),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (seq)").format(
            sql.Identifier(f"{CHECKPOINTS}_seq"), sql.Identifier(CHECKPOINTS)
        ),
        sql.SQL(_FUNCTION).format(),
    ]
    for name in (events, CHECKPOINTS):
        statements += [
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} BEFORE UPDATE OR DELETE ON {} "
                "FOR EACH ROW EXECUTE FUNCTION jobtrail_append_only()"
            ).format(sql.Identifier(f"{name}_append_only"), sql.Identifier(name)),
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} BEFORE TRUNCATE ON {} "
                "FOR EACH STATEMENT EXECUTE FUNCTION jobtrail_append_only()"
            ).format(sql.Identifier(f"{name}_no_truncate"), sql.Identifier(name)),
        ]
    return statements


def create(conn: psycopg.Connection[Any], events: str = EVENTS) -> None:
    """Adds the chain column, the checkpoints table and the append-only triggers (idempotent)."""
    present = conn.execute(
        "SELECT count(*) AS n FROM pg_trigger WHERE tgname = ANY(%s)",
        [[f"{events}_append_only", f"{events}_no_truncate", f"{CHECKPOINTS}_append_only"]],
    ).fetchone()
    chained = conn.execute(
        "SELECT count(*) AS n FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'previous'",
        [CHECKPOINTS],
    ).fetchone()
    if present is not None and present["n"] == 3 and chained is not None and chained["n"]:
        return  # ALTER TABLE would wait for the table lock every insert holds: skip when done
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7261002)")
        for statement in _ddl(events):
            conn.execute(statement)


def grant(
    conn: psycopg.Connection[Any], role: str, *, read_only: bool = False, events: str = EVENTS
) -> None:
    """Grants a service role what the services need: the log may be read and appended to.

    No UPDATE, DELETE or TRUNCATE on the events or checkpoints table: appends serialise on an
    advisory lock (recorder.LOG_LOCK), not on a table lock that would need them, and the triggers
    refuse them anyway. The API key table is read only (``jobtrail keys`` runs as the owner). The
    derived tables (timers, leases, positions, ...) are read-write. Rights an older grant gave on
    the log, checkpoint and key tables are revoked first. ``read_only``: an auditor's role,
    SELECT on every jobtrail table and nothing else.
    """
    who = sql.Identifier(role)
    with conn.transaction():
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(who))
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename LIKE 'jobtrail\\_%%'"
        ).fetchall()
        names = [row["tablename"] for row in tables]
        for name in {events, CHECKPOINTS, KEYS} & set(names):  # what an older grant gave
            conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(name), who))
        select_only = names if read_only else [n for n in names if n == KEYS]
        for name in select_only:
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(name), who))
        if read_only:
            return
        for name in (events, CHECKPOINTS):
            conn.execute(
                sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(name), who)
            )
        sequence = conn.execute(
            "SELECT pg_get_serial_sequence(%s, 'notification_id') AS s", [events]
        ).fetchone()
        if sequence and sequence["s"]:
            conn.execute(
                sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(
                    sql.SQL(sequence["s"]), who
                )
            )
        for name in names:
            if name not in (events, CHECKPOINTS, KEYS):
                conn.execute(
                    sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                        sql.Identifier(name), who
                    )
                )


# -- checkpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The log head after every event up to ``notification_id``; ``events`` counts them.

    ``seq`` numbers the checkpoints from 1 and ``previous`` is the digest of the one before
    (GENESIS for the first); both are None on a checkpoint written before checkpoints chained
    (read as number 0: it can only come before every chained one).
    """

    notification_id: int
    head: bytes
    events: int
    created_at: str = ""
    signature: bytes | None = None
    source: str = "database"
    seq: int | None = None
    previous: bytes | None = None

    @property
    def digest(self) -> bytes:
        return checkpoint_digest(
            self.seq or 0, self.notification_id, self.head, self.events, self.previous or GENESIS
        )

    def signed_by(self, key: bytes) -> bool:
        if self.signature is None:
            return False
        if self.seq is None:  # an unchained checkpoint signs (notification id, head) only
            return hmac.compare_digest(sign(key, self.notification_id, self.head), self.signature)
        return hmac.compare_digest(sign_digest(key, self.digest), self.signature)

    def to_json(self) -> str:
        return json.dumps(
            {
                "notification_id": self.notification_id,
                "head": self.head.hex(),
                "events": self.events,
                "created_at": self.created_at,
                "signature": self.signature.hex() if self.signature else None,
                "seq": self.seq,
                "previous": self.previous.hex() if self.previous is not None else None,
            }
        )

    @classmethod
    def from_json(cls, line: str, source: str) -> Checkpoint:
        data = json.loads(line)
        return cls(
            notification_id=int(data["notification_id"]),
            head=bytes.fromhex(data["head"]),
            events=int(data["events"]),
            created_at=str(data.get("created_at") or ""),
            signature=bytes.fromhex(data["signature"]) if data.get("signature") else None,
            source=source,
            seq=int(data["seq"]) if data.get("seq") is not None else None,
            previous=bytes.fromhex(data["previous"]) if data.get("previous") else None,
        )


def _checkpoint(row: dict[str, Any]) -> Checkpoint:
    created = row["created_at"]
    return Checkpoint(
        notification_id=int(row["notification_id"]),
        head=bytes(row["head"]),
        events=int(row["events"]),
        created_at=created.isoformat() if isinstance(created, datetime) else str(created),
        signature=bytes(row["signature"]) if row["signature"] is not None else None,
        seq=int(row["seq"]) if row.get("seq") is not None else None,
        previous=bytes(row["previous"]) if row.get("previous") is not None else None,
    )


class CheckpointChainError(RuntimeError):
    """The database's checkpoints do not continue the file copy's: some were deleted or
    replaced. No new checkpoint is signed over them (it would bless whatever replaced them)."""


def _last_file_mark(path: Path) -> Checkpoint | None:
    """The last whole checkpoint line of the file copy (read from its end; the file only grows)."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 8192))
        lines = f.read().decode("utf-8", "replace").splitlines()
    for line in reversed(lines[1:] if size > 8192 else lines):
        try:
            return Checkpoint.from_json(line, f"file {path}")
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line (a crash while appending)
    return None


def checkpoints(conn: psycopg.Connection[Any]) -> list[Checkpoint]:
    rows = conn.execute(
        sql.SQL("SELECT * FROM {} ORDER BY notification_id").format(sql.Identifier(CHECKPOINTS))
    ).fetchall()
    return [_checkpoint(row) for row in rows]


def write_checkpoint(
    conn: psycopg.Connection[Any],
    *,
    key: bytes | None = None,
    file: Path | None = None,
    events: str = EVENTS,
) -> Checkpoint | None:
    """Extends the last checkpoint over the events committed since; None when there are none.

    The insert lock of the events table makes notification ids rise in commit order, so every
    event up to the newest committed one is already visible. The file copy is written after the
    commit (and fsynced): it is the copy an attacker with only database access cannot rewrite.
    Each checkpoint chains to the previous one (``seq``, ``previous``, signed together). When the
    file copy's last checkpoint is not in the database as written, raises CheckpointChainError
    instead of signing: someone deleted or replaced checkpoints to re-anchor a rewritten log.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_CHECKPOINT_LOCK])
        last = conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY notification_id DESC LIMIT 1").format(
                sql.Identifier(CHECKPOINTS)
            )
        ).fetchone()
        known = _last_file_mark(file) if file is not None else None
        if known is not None and known.seq is not None:
            stored = conn.execute(
                sql.SQL("SELECT * FROM {} WHERE seq = %s").format(sql.Identifier(CHECKPOINTS)),
                [known.seq],
            ).fetchone()
            if stored is None or _checkpoint(stored).digest != known.digest:
                raise CheckpointChainError(
                    f"checkpoint {known.seq} of the file copy {file} is "
                    + ("missing from" if stored is None else "not the one in")
                    + " the database: checkpoints were deleted or replaced; not signing a new "
                    "one over them (run `jobtrail verify`)"
                )
        position, head, count = (
            (last["notification_id"], bytes(last["head"]), last["events"])
            if last
            else (0, GENESIS, 0)
        )
        rows = conn.execute(
            sql.SQL(
                "SELECT notification_id, chain_hash FROM {} WHERE notification_id > %s "
                "ORDER BY notification_id"
            ).format(sql.Identifier(events)),
            [position],
        )
        seen = 0
        for row in rows:
            head = head_hash(head, row["notification_id"], bytes(row["chain_hash"] or GENESIS))
            position, seen = row["notification_id"], seen + 1
        if not seen:
            return None
        before = _checkpoint(last) if last else None
        if before is not None and before.seq is None:
            chained = conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE seq IS NOT NULL LIMIT 1").format(
                    sql.Identifier(CHECKPOINTS)
                )
            ).fetchone()
            if chained is not None:  # written by an older jobtrail, or inserted: not followed
                raise CheckpointChainError(
                    f"the newest checkpoint (notification {before.notification_id}) is unchained "
                    "but chained ones exist: written by an older jobtrail or inserted; not "
                    "signing a new one after it (run `jobtrail verify`)"
                )
        seq = (before.seq or 0) + 1 if before else 1
        previous = before.digest if before else GENESIS
        digest = checkpoint_digest(seq, position, head, count + seen, previous)
        signature = sign_digest(key, digest) if key else None
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {} (notification_id, head, events, signature, seq, previous) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *"
            ).format(sql.Identifier(CHECKPOINTS)),
            [position, head, count + seen, signature, seq, previous],
        ).fetchone()
        assert row is not None
    checkpoint = _checkpoint(row)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        with file.open("a", encoding="utf-8") as out:
            out.write(checkpoint.to_json() + "\n")
            out.flush()
            os.fsync(out.fileno())
    return checkpoint


def read_checkpoint_file(path: Path) -> list[Checkpoint]:
    """Every checkpoint in a file; a torn last line (a crash while appending) is skipped, any
    other unreadable line raises ValueError naming it."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    marks = []
    for number, line in enumerate(lines, 1):
        try:
            marks.append(Checkpoint.from_json(line, f"file {path}"))
        except (ValueError, KeyError, TypeError) as exc:
            if number < len(lines):
                raise ValueError(f"{path} line {number} is not a checkpoint: {exc}") from None
    return marks


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One stored event as verification sees it."""

    notification_id: int
    job_id: UUID
    version: int
    topic: str
    state: bytes
    chain_hash: bytes | None

    def to_archive(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "job_id": str(self.job_id),
            "version": self.version,
            "topic": self.topic,
            "state": base64.b64encode(self.state).decode(),
            "chain_hash": self.chain_hash.hex() if self.chain_hash else None,
        }

    @classmethod
    def from_archive(cls, data: dict[str, Any]) -> Row:
        return cls(
            notification_id=int(data["notification_id"]),
            job_id=UUID(data["job_id"]),
            version=int(data["version"]),
            topic=str(data["topic"]),
            state=base64.b64decode(data["state"]),
            chain_hash=bytes.fromhex(data["chain_hash"]) if data["chain_hash"] else None,
        )


def _row(r: dict[str, Any]) -> Row:
    return Row(
        notification_id=r["notification_id"],
        job_id=r["originator_id"],
        version=r["originator_version"],
        topic=r["topic"],
        state=bytes(r["state"]),
        chain_hash=bytes(r["chain_hash"]) if r["chain_hash"] is not None else None,
    )


@dataclass(frozen=True)
class Problem:
    """One thing verification found wrong; ``job_id``/``version`` name where, when known."""

    kind: str
    detail: str
    job_id: UUID | None = None
    version: int | None = None
    notification_id: int | None = None

    def __str__(self) -> str:
        where = f"job {self.job_id} version {self.version}: " if self.job_id else ""
        return f"[{self.kind}] {where}{self.detail}"


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
    conninfo: str,
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
    from shared.eventstore import archive as archive_module

    report = Report()
    archived = [archive_module.read(path) for path in archives]
    for bundle in archived:
        report.problems.extend(bundle.problems)
        check_chains(bundle.by_job(), report)
    table = sql.Identifier(events)
    # Before the snapshot: each line was written after its checkpoint committed, so the snapshot
    # sees every row a line covers (read later, a new line could name rows it cannot see).
    from_file = read_checkpoint_file(checkpoint_file) if checkpoint_file is not None else []
    with psycopg.connect(conninfo, row_factory=dict_row) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            check_chains(
                (
                    _row(r)
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
