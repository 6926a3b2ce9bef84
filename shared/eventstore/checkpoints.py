"""Checkpoints of the log head: written over new events, chained, signed, copied to a file.

``write_checkpoint`` extends the running log head over the events committed since the last
checkpoint and stores it, chained to the previous one; it refuses to sign when the file copy
knows checkpoints the database lost. ``read_checkpoint_file`` reads the file copy back for
verification (``shared.eventstore.verify``).
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from shared.eventstore import locks
from shared.eventstore.chain import GENESIS, checkpoint_digest, head_hash, sign, sign_digest
from shared.eventstore.schema import CHECKPOINTS, EVENTS


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

    @classmethod
    def from_db(cls, row: Mapping[str, Any]) -> Checkpoint:
        """A row of the checkpoints table."""
        created = row["created_at"]
        return cls(
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
    return [Checkpoint.from_db(row) for row in rows]


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
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [locks.CHECKPOINT])
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
            if stored is None or Checkpoint.from_db(stored).digest != known.digest:
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
        before = Checkpoint.from_db(last) if last else None
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
    checkpoint = Checkpoint.from_db(row)
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
