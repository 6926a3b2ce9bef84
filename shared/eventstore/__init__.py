"""The event store adapter: the only code that touches eventsourcing's Application."""

from shared.eventstore.aio import AsyncJobStore
from shared.eventstore.store import ConcurrencyError, JobStore, Outcome, ensure_database

__all__ = ["AsyncJobStore", "ConcurrencyError", "JobStore", "Outcome", "ensure_database"]
