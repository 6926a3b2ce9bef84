"""The CLI's one way to open the log (``JOBTRAIL_POSTGRES_URL``) and the Redis view.

Commands that read or write PostgreSQL directly (audit, verify, checkpoint, archive, db, keys,
replay, and the local key of ``up``/``demo``) open it here: a plain connection for tables the
store does not own, a JobStore for the events, or the async store with the Redis view. A log that
cannot be opened ends the command with a message saying what to check, never a password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from pydantic import ValidationError

from services.cli.console import fail, first_line
from shared import postgres
from shared.eventstore import AsyncJobStore, JobStore
from shared.redact import redact_url
from shared.redis_view import RedisView
from shared.settings import RedisSettings, StoreSettings


def settings() -> StoreSettings:
    """The store's settings from the environment; a CLI error naming the bad variable."""
    try:
        return StoreSettings()
    except ValidationError as exc:
        raise fail(f"JOBTRAIL_POSTGRES_URL: {exc.errors()[0]['msg']}", 2) from None


def log_conninfo() -> str:
    """The URL of the log's database (every option honoured by ``shared.postgres``)."""
    return settings().postgres_url


def connect() -> psycopg.Connection[Any]:
    """A connection to the log's database (autocommit, rows as dicts)."""
    try:
        return postgres.connect(settings())
    except psycopg.OperationalError as exc:
        raise fail(f"cannot reach PostgreSQL (check JOBTRAIL_POSTGRES_URL): {exc}") from None


@contextmanager
def open_store() -> Iterator[JobStore]:
    """A JobStore on JOBTRAIL_POSTGRES_URL; a CLI error saying what to fix when it cannot open."""
    given = settings()
    try:
        store = JobStore(given)
    except Exception as exc:  # psycopg's or eventsourcing's connection errors, whichever
        raise fail(
            f"cannot read the log at {redact_url(given.postgres_url)} ({type(exc).__name__}: "
            f"{first_line(exc)}); check JOBTRAIL_POSTGRES_URL and that PostgreSQL runs"
        ) from None
    try:
        yield store
    finally:
        store.close()


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[AsyncJobStore, RedisView]]:
    """The async store and the Redis view (``jobtrail rebuild``, the Redis part of ``verify``)."""
    async with AsyncJobStore(JobStore(StoreSettings())) as store:
        view = RedisView(RedisSettings())
        try:
            yield store, view
        finally:
            await view.aclose()
