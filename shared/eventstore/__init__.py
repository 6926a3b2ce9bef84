"""The event store adapter: the only code that touches eventsourcing's Application.

The package's modules, from the bottom up (docs/architecture.md draws the tree): ``locks`` and
``chain`` depend on nothing; ``schema`` creates every table, trigger and grant; ``store`` runs
commands (``commands``) through the recorder and pool; ``tables``, ``checkpoints``, ``archive``,
``verify`` and ``export`` read and write beside the log through the store's public interface.
"""

from shared.eventstore import tables
from shared.eventstore.aio import AsyncJobStore, StoreOverloadedError
from shared.eventstore.commands import (
    Command,
    ConcurrencyError,
    Outcome,
    Undecodable,
    UndecodableHistoryError,
    UnstorableEventError,
    existing,
)
from shared.eventstore.pool import cap_reconnect_backoff
from shared.eventstore.schema import ensure_database
from shared.eventstore.store import JobStore

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
