"""The one way jobtrail opens a PostgreSQL connection of its own (all but the log's pool).

Every connection is opened from the whole ``JOBTRAIL_POSTGRES_URL``, so it honours every option
the URL carries (``sslmode``, ``sslrootcert``, ``application_name``, ``options`` ...), and with
one timeout policy: ``StoreSettings.postgres_connect_timeout_s`` (``JOBTRAIL_POSTGRES_CONNECT_
TIMEOUT_S``), the setting eventsourcing's pool is given too (shared/eventstore/pool.py). As in
the pool, the setting wins over a ``connect_timeout`` in the URL. Rows come back as dicts.

The log's pool is built by eventsourcing from ``StoreSettings.eventsourcing_env`` and receives
the same options and timeout there.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from shared.settings import StoreSettings

Target = StoreSettings | str
"""Where to connect: the store's settings, or a PostgreSQL URL (other settings from the
environment)."""


def settings_of(target: Target) -> StoreSettings:
    return target if isinstance(target, StoreSettings) else StoreSettings(postgres_url=target)


def connect_kwargs(target: Target, dbname: str | None = None) -> dict[str, Any]:
    """The conninfo (the whole URL) and keyword arguments every connection is opened with."""
    settings = settings_of(target)
    kwargs: dict[str, Any] = {
        "conninfo": settings.postgres_url.replace("postgres://", "postgresql://", 1),
        "connect_timeout": settings.postgres_connect_timeout_s,
    }
    if dbname is not None:
        kwargs["dbname"] = dbname
    return kwargs


def connect(
    target: Target, *, dbname: str | None = None, autocommit: bool = True
) -> psycopg.Connection[dict[str, Any]]:
    """A new connection (autocommit unless asked otherwise; dict rows); ``dbname`` replaces
    the URL's database (``postgres`` to create one)."""
    return psycopg.connect(
        **connect_kwargs(target, dbname), autocommit=autocommit, row_factory=dict_row
    )


async def connect_async(
    target: Target, *, autocommit: bool = True
) -> psycopg.AsyncConnection[dict[str, Any]]:
    """``connect`` for asyncio (LISTEN, leader election, the projector's log reader)."""
    return await psycopg.AsyncConnection.connect(
        **connect_kwargs(target), autocommit=autocommit, row_factory=dict_row
    )
