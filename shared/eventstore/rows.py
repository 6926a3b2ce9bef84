"""The log's rows as the audit tools read them (verification, archive, export), and the
problems they report: the vocabulary those modules share, below all of them."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class Row:
    """One stored event, byte for byte: where it is in the log, and its chain hash."""

    notification_id: int
    job_id: UUID
    version: int
    topic: str
    state: bytes
    chain_hash: bytes | None

    @classmethod
    def from_db(cls, r: Mapping[str, Any]) -> Row:
        """A row of the events table (``SELECT *``) as read with dict rows."""
        return cls(
            notification_id=r["notification_id"],
            job_id=r["originator_id"],
            version=r["originator_version"],
            topic=r["topic"],
            state=bytes(r["state"]),
            chain_hash=bytes(r["chain_hash"]) if r["chain_hash"] is not None else None,
        )

    def to_db(self) -> dict[str, Any]:
        """The row with the events table's column names (what ``JobStore.decode`` reads)."""
        return {
            "notification_id": self.notification_id,
            "originator_id": self.job_id,
            "originator_version": self.version,
            "topic": self.topic,
            "state": self.state,
            "chain_hash": self.chain_hash,
        }

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
