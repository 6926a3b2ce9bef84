"""Dead letters: every message a consumer rejects is recorded in PostgreSQL and counted.

A broker middleware sees each delivery's end. When handling raised anything but an explicit
ack or nack, FastStream's reject-on-error policy sends the message to the dead-letter queue; the
middleware records it first (``jobtrail_dead_letters``: queue, reason, the job when the body names
one, ids, error, the body's first 4 KiB) and counts it. The record is not an event: a message
that could not be read must not move its job. Recording is best effort: when PostgreSQL is away
the dead letter is still counted, logged and in the queue (`jobtrail dlq list`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any
from uuid import UUID

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, NackMessage, RejectMessage
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from shared.eventstore import AsyncJobStore, JobStore, tables
from shared.messaging import Routes
from shared.metrics import CONSUMED, DEAD_LETTERS, watch_store
from shared.retrying import retry_transient

log = logging.getLogger(__name__)

BODY_LIMIT = 4096


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message, as recorded."""

    queue: str
    reason: str  # invalid (failed its contract), rejected (refused by the handler), error
    job_id: UUID | None
    message_id: str | None
    correlation_id: str | None
    error: str
    body: bytes


def job_id_in(body: bytes) -> UUID | None:
    """The job a message names (``data.job_id`` or ``job_id``), read leniently; None if none."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    data = document.get("data")
    candidate = data.get("job_id") if isinstance(data, dict) else None
    try:
        return UUID(str(candidate or document.get("job_id")))
    except ValueError:
        return None


def reason_of(error: BaseException) -> str:
    if isinstance(error, (ValidationError, ValueError)):  # includes JSON decode errors
        return "invalid"
    if isinstance(error, RejectMessage):
        return "rejected"
    return "error"


def dead_letter(queue: str, message: Any, reason: str, error: str) -> DeadLetter:
    """The record of an aio-pika message that was dead-lettered from ``queue``."""
    body = bytes(getattr(message, "body", b""))
    return DeadLetter(
        queue=queue,
        reason=reason,
        job_id=job_id_in(body),
        message_id=getattr(message, "message_id", None),
        correlation_id=getattr(message, "correlation_id", None),
        error=error[:2000],
        body=body[:BODY_LIMIT],
    )


Recorder = Callable[[DeadLetter], Awaitable[None]]


def recorder(store: AsyncJobStore) -> Recorder:
    """Writes a dead letter to ``jobtrail_dead_letters`` of the store's database."""

    async def record(letter: DeadLetter) -> None:
        await store.run_sync(
            tables.on_connection, store.store, tables.record_dead_letter, asdict(letter)
        )

    return record


async def report(letter: DeadLetter, record: Recorder) -> None:
    """Counts, logs and records a dead letter; recording is best effort (it stays in the queue)."""
    DEAD_LETTERS.labels(letter.queue, letter.reason).inc()
    log.warning("dead letter from %s (job %s): %s", letter.queue, letter.job_id, letter.error[:300])
    try:
        await record(letter)
    except Exception as exc:
        log.error("dead letter from %s not recorded: %r", letter.queue, exc)


class DeadLetterMiddleware:
    """A broker middleware: counts every delivery's outcome, records and counts dead letters."""

    def __init__(self, record: Recorder) -> None:
        self.record = record

    def __call__(self, msg: Any, /, *, context: Any) -> _Watch:
        return _Watch(msg, context=context, record=self.record)


class _Watch(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, record: Recorder) -> None:
        super().__init__(msg, context=context)
        self.record = record

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        handler = self.context.get_local("handler_")
        queue = str(getattr(getattr(handler, "queue", None), "name", "") or "unknown")
        if not isinstance(exc_val, Exception) or isinstance(exc_val, AckMessage):
            CONSUMED.labels(queue, "handled").inc()
        elif isinstance(exc_val, NackMessage):
            CONSUMED.labels(queue, "returned").inc()
        else:  # the ack policy rejects it: it goes to the dead-letter queue
            CONSUMED.labels(queue, "dead_lettered").inc()
            error = f"{type(exc_val).__name__}: {exc_val}"
            await report(dead_letter(queue, self.msg, reason_of(exc_val), error), self.record)
        return False


def watch(broker: RabbitBroker, store: AsyncJobStore) -> None:
    """Records and counts the broker's dead letters in the store's database, and exposes the
    store's counters; call before registering subscribers."""

    broker.add_middleware(DeadLetterMiddleware(recorder(store)))
    watch_store(store.store)


def broker_dead_letter(message: Any) -> DeadLetter | None:
    """The record of a message RabbitMQ dead-lettered by itself (a quorum queue's delivery limit,
    an expiry, an overflow), read from its ``x-death`` header; None for a consumer's reject,
    which the middleware recorded already with its error."""
    deaths = (getattr(message, "headers", None) or {}).get("x-death") or []
    death = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    reason = str(death.get("reason") or "unknown")
    if reason == "rejected":
        return None
    error = f"dead-lettered by RabbitMQ ({reason}) after {death.get('count', 1)} death(s)"
    return dead_letter(str(death.get("queue") or "unknown"), message, reason, error)


def register_ledger(broker: RabbitBroker, routes: Routes, store: AsyncJobStore) -> None:
    """Records and counts what RabbitMQ dead-letters by itself: the ledger queue gets a copy of
    every dead letter from the dead-letter exchange (the dead-letter queue keeps its own)."""

    record = recorder(store)

    async def record_with_retries(letter: DeadLetter) -> None:
        await retry_transient(lambda: record(letter))

    @broker.subscriber(routes.ledger, routes.dlx, title="dead-letter-ledger")
    async def on_dead_letter(message: RabbitMessage) -> None:
        """A copy of a dead letter: recorded unless a consumer rejected it (already recorded)."""
        letter = broker_dead_letter(message.raw_message)
        if letter is not None:
            await report(letter, record_with_retries)


def recorded(store: JobStore, job_id: UUID | None, limit: int) -> list[dict[str, Any]]:
    """Recorded dead letters, newest first (only the job's when ``job_id`` is given)."""
    return tables.on_connection(store, tables.dead_letters, job_id, limit)
