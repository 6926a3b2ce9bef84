"""Retries of transient infrastructure failures (database or broker briefly away), and how a
consumer keeps a message through an outage of any length.

A consumer must never lose or dead-letter a valid message because our own database was away.
Giving up after a budget would send it to the dead-letter queue; handing it back with a requeue
counts as a delivery on a quorum queue (its delivery limit then dead-letters it); holding the
delivery unacknowledged for longer than RabbitMQ's ``consumer_timeout`` (30 min by default) makes
the broker close the channel (and return it, which also counts). So ``hold`` retries while the
delivery is held, for at most ``hold_s`` (well under ``consumer_timeout``), then parks the
message: a copy goes to the back of its own queue (confirmed) and the delivery is acknowledged.
A parked copy is a new message with its delivery count at zero; the consumer meets it again
after the rest of the queue, and holds it again if the database is still away. While deliveries
are held, the prefetch bounds how many more the consumer takes: consumption pauses by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from eventsourcing.persistence import InterfaceError, InternalError, OperationalError

from shared.eventstore import ConcurrencyError, StoreOverloadedError

T = TypeVar("T")
log = logging.getLogger(__name__)

TRANSIENT: tuple[type[Exception], ...] = (
    ConcurrencyError,
    StoreOverloadedError,  # this process's group-commit queue is full: nothing written, retry
    OperationalError,
    InterfaceError,
    InternalError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.InternalError,
    ConnectionError,
    TimeoutError,
)

BACKOFF_CAP_S = 5.0
"""The longest wait between two tries: a consumer resumes within this of the database's return."""


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    deadline_s: float = 60.0,
    first_s: float = 0.2,
    retry_on: tuple[type[Exception], ...] = TRANSIENT,
) -> T:
    """Calls until it succeeds, retrying ``retry_on`` failures with backoff up to ``deadline_s``."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    delay = first_s
    while True:
        try:
            return await call()
        except retry_on as exc:
            if loop.time() + delay > give_up:
                raise
            log.warning("transient failure, retrying in %.1f s: %r", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP_S)


async def hold(
    call: Callable[[], Awaitable[T]],
    *,
    hold_s: float,
    park: Callable[[], Awaitable[None]],
    retry_on: tuple[type[Exception], ...] = TRANSIENT,
) -> T | None:
    """Calls until it succeeds, however long ``retry_on`` failures last: retries for ``hold_s``
    while the caller holds its delivery, then ``park``s the message (the caller acknowledges the
    delivery) and returns None. A park that fails (the broker away too) means holding on: the
    delivery is still unacknowledged, so nothing is lost either way."""
    while True:
        try:
            return await retry_transient(call, deadline_s=hold_s, retry_on=retry_on)
        except retry_on as exc:
            try:
                await park()
            except Exception as failed:
                log.warning("still failing (%r) and cannot park (%r): holding on", exc, failed)
                continue
            log.warning(
                "still failing after %.0f s (%r): parked at the back of its queue", hold_s, exc
            )
            return None
