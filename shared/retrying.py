"""Retries of transient infrastructure failures (database or broker briefly away)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from eventsourcing.persistence import InterfaceError, InternalError, OperationalError

from shared.eventstore import ConcurrencyError

T = TypeVar("T")
log = logging.getLogger(__name__)

TRANSIENT: tuple[type[Exception], ...] = (
    ConcurrencyError,
    OperationalError,
    InterfaceError,
    InternalError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.InternalError,
    ConnectionError,
    TimeoutError,
)


async def retry_transient(
    call: Callable[[], Awaitable[T]], *, deadline_s: float = 60.0, first_s: float = 0.2
) -> T:
    """Calls until it succeeds, retrying transient failures with backoff up to ``deadline_s``."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    delay = first_s
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            if loop.time() + delay > give_up:
                raise
            log.warning("transient failure, retrying in %.1f s: %r", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
