"""The connection pool comes back within seconds of PostgreSQL, however long it was away.

psycopg_pool replaces a broken connection in the background, waiting 1, 2, 4, 8 ... s between
attempts (doubling, for up to ``reconnect_timeout``, 5 min). After an outage of 90 s its next
attempt can be a minute after PostgreSQL is back, and until then every command fails with
"couldn't get a connection": held commands and outcomes wait for the pool, not for the database.
jobtrail caps the wait between two attempts at ``MAX_RECONNECT_DELAY_S``: an attempt against a
database that is down costs one refused connection.
"""

from __future__ import annotations

import psycopg_pool.pool
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
