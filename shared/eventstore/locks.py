"""Every PostgreSQL advisory-lock key jobtrail takes, named, in one place.

Two key spaces never meet: the one-``bigint`` keys (the per-job keys of ``job_key``, and the
``726100x``-``726104x`` constants below) and the two-``int`` keys (``LOG_LOCK``). A new lock gets
its name here, so two features never pick the same number by accident.
"""

from __future__ import annotations

from uuid import UUID

SCHEMA = 7261000
"""Session lock held while eventsourcing creates its table and type (``CREATE TYPE`` has no IF
NOT EXISTS: two processes creating the schema at once collide)."""

DERIVED_TABLES_DDL = 7261001
"""Transaction lock around the DDL of the derived tables (concurrent first starts)."""

INTEGRITY_DDL = 7261002
"""Transaction lock around the chain column, checkpoint table and append-only triggers."""

RELAY_LEADER = 7261010
PROJECTION_LEADER = 7261011
SCHEDULER_LEADER = 7261020
LEADERS = {"relay": RELAY_LEADER, "projection": PROJECTION_LEADER, "scheduler": SCHEDULER_LEADER}
"""Session locks of leader election (shared.leader), by the name of the leader's work."""

CHECKPOINT = 7261030
"""Transaction lock that serialises checkpoint writers."""

API_KEYS_DDL = 7261040
"""Transaction lock around the DDL of the API key table (shared.keys)."""

LOG_LOCK = (7261, 50)
"""The advisory-lock key every appender of the log takes (the two-int key space: it never meets
the 64-bit per-job keys). ``lock_timeout`` bounds the wait as it bounded the table lock's: a
writer that waits longer fails with ``LockNotAvailable`` (SQLSTATE 55P03)."""


def job_key(job_id: UUID) -> int:
    """The 64-bit advisory-lock key of a job (held by every command on it, and by the archive)."""
    return int.from_bytes(job_id.bytes[:8], "big", signed=True)
