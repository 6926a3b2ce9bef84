"""The log's connection pool: it honours the URL's options, and comes back within seconds of
PostgreSQL, however long it was away.

eventsourcing builds its pool from host, port, user, password and database name alone, so the
query options of ``JOBTRAIL_POSTGRES_URL`` (``?sslmode=verify-full&sslrootcert=...``,
``application_name``, ...) would be dropped: the pool that writes the log would connect without
TLS while every other connection used it. ``PostgresFactory`` (named by
``StoreSettings.eventsourcing_env``) gives the pool those options as its conninfo.

psycopg_pool replaces a broken connection in the background, waiting 1, 2, 4, 8 ... s between
attempts (doubling, for up to ``reconnect_timeout``, 5 min). After an outage of 90 s its next
attempt can be a minute after PostgreSQL is back, and until then every command fails with
"couldn't get a connection": held commands and outcomes wait for the pool, not for the database.
jobtrail caps the wait between two attempts at ``MAX_RECONNECT_DELAY_S``: an attempt against a
database that is down costs one refused connection.
"""

from __future__ import annotations

from typing import Any

import psycopg_pool.pool
from eventsourcing import postgres
from psycopg_pool.base import AttemptWithBackoff

MAX_RECONNECT_DELAY_S = 2.0


class CappedBackoff(AttemptWithBackoff):
    """psycopg_pool's reconnection backoff, never waiting longer than MAX_RECONNECT_DELAY_S."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, MAX_RECONNECT_DELAY_S)


def cap_reconnect_backoff() -> None:
    """Makes every psycopg_pool.ConnectionPool of this process use CappedBackoff (idempotent).
    The pool module names the class it instantiates; nothing else changes."""
    setattr(psycopg_pool.pool, "AttemptWithBackoff", CappedBackoff)  # noqa: B010 (a module attribute mypy sees as private)


class PostgresFactory(postgres.PostgresFactory):
    """eventsourcing's PostgreSQL factory whose pool connects with the URL's query options
    (``POSTGRES_CONNINFO_OPTIONS``, a libpq conninfo string: StoreSettings.postgres_options)."""

    CONNINFO_OPTIONS = "POSTGRES_CONNINFO_OPTIONS"

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        # The pool connects with connect(conninfo, **kwargs): host, port, user, password and
        # dbname stay in kwargs (and win), every other option comes from the URL.
        self.datastore.pool.conninfo = self.env.get(self.CONNINFO_OPTIONS) or ""
