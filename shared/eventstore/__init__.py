"""The event store adapter: the only code that touches eventsourcing's Application."""

from shared.eventstore import tables
from shared.eventstore.aio import AsyncJobStore, StoreOverloadedError
from shared.eventstore.pool import cap_reconnect_backoff
from shared.eventstore.store import (
    Command,
    ConcurrencyError,
    JobStore,
    Outcome,
    Undecodable,
    UndecodableHistoryError,
    UnstorableEventError,
    ensure_database,
    existing,
)

cap_reconnect_backoff()  # before any pool exists: see shared/eventstore/pool.py

__all__ = [
    "AsyncJobStore",
    "Command",
    "ConcurrencyError",
    "JobStore",
    "Outcome",
    "StoreOverloadedError",
    "Undecodable",
    "UndecodableHistoryError",
    "UnstorableEventError",
    "ensure_database",
    "existing",
    "tables",
]
