"""The event store adapter: the only code that touches eventsourcing's Application."""

from shared.eventstore import tables
from shared.eventstore.aio import AsyncJobStore
from shared.eventstore.store import (
    Command,
    ConcurrencyError,
    JobStore,
    Outcome,
    Undecodable,
    UnstorableEventError,
    ensure_database,
    existing,
)

__all__ = [
    "AsyncJobStore",
    "Command",
    "ConcurrencyError",
    "JobStore",
    "Outcome",
    "Undecodable",
    "UnstorableEventError",
    "ensure_database",
    "existing",
    "tables",
]
