"""Dead letters: every message that reaches the dead-letter exchange is recorded once, and counted.

Two paths write the same row, so that the record has the consumer's error when it can and exists
even when PostgreSQL was away when the message died:

- A broker middleware sees each delivery's end. When handling raised anything but an explicit
  ack or nack, FastStream's reject-on-error policy sends the message to the dead-letter queue; the
  middleware counts it and records it with the consumer's reason and error. That write is best
  effort: the database may be the very thing that is away.
- The ledger queue (``<prefix>.dlq.ledger``, bound to the dead-letter exchange beside the
  dead-letter queue) gets a copy of every dead letter, whoever killed it (a consumer, a quorum
  queue's delivery limit, an overflow). The scheduler records each copy (services/scheduler/
  ledger.py) and acknowledges it only once it is recorded; while the database is away it holds
  the copy (and parks it at the back of the ledger queue, see shared/retrying.py), so the record
  is written when the database is back. It reads the raw bytes and the ``x-death`` header only:
  it never parses a body as a contract, since a body that fails its contract is what it exists
  to record.

This module holds what both paths, the consumers' middleware and the readers of the table (the
submitter's ``GET /v1/dead-letters``, ``jobtrail dlq``) share: the record, its key, writing and
reading it.

Both write under one key, a digest of (message id, or the body's SHA-256 when there is none; the
queue it died in; its death count there; how often ``jobtrail dlq republish`` has replayed it, from
the ``jobtrail-replays`` header, since replay strips ``x-death`` and the count starts over): the
ledger's insert does nothing when the row is there, the middleware's replaces the ledger's generic
reason and error with the consumer's. One death,
one row. The record is not an event: a message that could not be read must not move its job.
"""

from __future__ import annotations

import hashlib
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
from pydantic import ValidationError

from shared.eventstore import AsyncJobStore, JobStore, tables
from shared.metrics import CONSUMED, DEAD_LETTERS, child, watch_store

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
    key: str  # one death of one message: see the module docstring


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


def _text(value: Any, limit: int) -> str | None:
    """A header or property as text PostgreSQL accepts (no NUL), bounded; None when absent."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value).replace("\x00", "\ufffd")[:limit]


def deaths_in(message: Any) -> list[dict[str, Any]]:
    """The ``x-death`` entries of a message (newest first), ignoring anything malformed."""
    headers = getattr(message, "headers", None) or {}
    deaths = headers.get("x-death") if isinstance(headers, dict) else None
    return [d for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []


def _count(death: dict[str, Any]) -> int:
    """An ``x-death`` entry's count (at least 1: the entry exists because it died)."""
    count = death.get("count")
    return count if isinstance(count, int) and count > 0 else 1


def death_count(message: Any, queue: str, reason: str) -> int:
    """How many times the message has died in ``queue`` for ``reason``, per its header."""
    for death in deaths_in(message):
        if _text(death.get("queue"), 1000) == queue and _text(death.get("reason"), 100) == reason:
            return _count(death)
    return 0


REPLAYS_HEADER = "jobtrail-replays"  # not x-: replay strips x- headers, this one must survive


def replays_in(message: Any) -> int:
    """How often ``jobtrail dlq republish`` has republished the message (0: never, or malformed)."""
    headers = getattr(message, "headers", None) or {}
    value = headers.get(REPLAYS_HEADER) if isinstance(headers, dict) else None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    try:
        count = int(value) if value is not None and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        return 0
    return max(count, 0)


def letter_key(message: Any, queue: str, deaths: int) -> str:
    """The key of one death of one message: its id (or its body's digest), the queue, the count,
    and its replay count (replay strips x-death, so the count starts over after each)."""
    body = bytes(getattr(message, "body", b"") or b"")
    identity = _text(getattr(message, "message_id", None), 1000) or (
        "sha256:" + hashlib.sha256(body).hexdigest()
    )
    replays = replays_in(message)
    suffix = f"\x1f{replays}" if replays else ""  # unchanged keys for never-replayed messages
    return hashlib.sha256(f"{identity}\x1f{queue}\x1f{deaths}{suffix}".encode()).hexdigest()


def dead_letter(
    queue: str, message: Any, reason: str, error: str, *, deaths: int | None = None
) -> DeadLetter:
    """The record of an aio-pika message that was dead-lettered from ``queue`` (its ``deaths``-th
    death there; by default the one a consumer's reject is causing now)."""
    body = bytes(getattr(message, "body", b"") or b"")
    if deaths is None:
        deaths = death_count(message, queue, "rejected") + 1
    return DeadLetter(
        queue=_text(queue, 1000) or "unknown",
        reason=reason,
        job_id=job_id_in(body),
        message_id=_text(getattr(message, "message_id", None), 1000),
        correlation_id=_text(getattr(message, "correlation_id", None), 1000),
        error=_text(error, 2000) or "",
        body=body[:BODY_LIMIT],
        key=letter_key(message, queue, deaths),
    )


Recorder = Callable[[DeadLetter], Awaitable[None]]


def recorder(store: AsyncJobStore, *, replace: bool = True) -> Recorder:
    """Writes a dead letter to ``jobtrail_dead_letters`` of the store's database, once per key:
    with ``replace`` (the consumer's own record) its reason and error win over the ledger's."""

    async def record(letter: DeadLetter) -> None:
        await store.run_sync(
            tables.on_connection, store.store, tables.record_dead_letter, asdict(letter), replace
        )

    return record


def announce(letter: DeadLetter) -> None:
    """Counts and logs a dead letter (once: by its consumer, or by the ledger when RabbitMQ
    made it)."""
    DEAD_LETTERS.labels(letter.queue, letter.reason).inc()
    log.warning("dead letter from %s (job %s): %s", letter.queue, letter.job_id, letter.error[:300])


async def report(letter: DeadLetter, record: Recorder) -> None:
    """Counts, logs and records a dead letter. Recording here is best effort: when it fails, the
    ledger records the dead letter's copy once the database answers again."""
    announce(letter)
    try:
        await record(letter)
    except Exception as exc:
        log.warning(
            "dead letter from %s not recorded now (%r): the ledger records it later",
            letter.queue,
            exc,
        )


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
            child(CONSUMED, queue, "handled").inc()
        elif isinstance(exc_val, NackMessage):
            child(CONSUMED, queue, "returned").inc()
        else:  # the ack policy rejects it: it goes to the dead-letter queue
            child(CONSUMED, queue, "dead_lettered").inc()
            error = f"{type(exc_val).__name__}: {exc_val}"
            await report(dead_letter(queue, self.msg, reason_of(exc_val), error), self.record)
        return False


def watch(broker: RabbitBroker, store: AsyncJobStore) -> None:
    """Records and counts the broker's dead letters in the store's database, and exposes the
    store's counters; call before registering subscribers."""

    broker.add_middleware(DeadLetterMiddleware(recorder(store)))
    watch_store(store)


def last_death(message: Any) -> tuple[str, str, int]:
    """The queue, reason and count of a message's newest ``x-death`` entry (``unknown``,
    ``unknown``, 1 when it has none); never raises, whatever the header holds."""
    deaths = deaths_in(message)
    death = deaths[0] if deaths else {}
    queue = _text(death.get("queue"), 1000) or "unknown"
    return queue, _text(death.get("reason"), 100) or "unknown", _count(death)


TABLE = "jobtrail_dead_letters"
COLUMNS = ("id", "at", "queue", "reason", "job_id", "message_id", "correlation_id", "error", "body")
"""What a recorded dead letter's row says (``GET /v1/dead-letters``)."""


def recorded(store: JobStore, job_id: UUID | None, limit: int) -> list[dict[str, Any]]:
    """Recorded dead letters, newest first (only the job's when ``job_id`` is given)."""
    return tables.on_connection(store, tables.newest_rows, TABLE, COLUMNS, job_id, limit)
