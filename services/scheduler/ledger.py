"""The dead-letter ledger: the scheduler records every dead letter once, from its copy.

Why here: the ledger queue (``<prefix>.dlq.ledger``) gets a copy of every message that reaches
the dead-letter exchange, whoever killed it; the scheduler consumes it (shared/dead_letters.py
says why there are two paths to one record, and holds what both share). This module reads a copy
(its raw bytes and ``x-death`` header only: never its body as a contract, since a body that fails
its contract is what the ledger exists to record) and records it, holding the copy while the
database is away.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shared.dead_letters import DeadLetter, Recorder, announce, dead_letter, last_death
from shared.retrying import hold

log = logging.getLogger(__name__)


def ledger_entry(message: Any) -> DeadLetter:
    """The record of a dead letter's copy in the ledger queue, from its ``x-death`` header and raw
    bytes only; never raises, whatever the message holds."""
    queue, reason, count = last_death(message)
    if reason == "rejected":
        error = "rejected by its consumer (recorded from the ledger; the consumer logged why)"
    else:
        error = f"dead-lettered by RabbitMQ ({reason}) after {count} death(s)"
    return dead_letter(queue, message, reason, error, deaths=count)


async def raw_body(message: Any) -> Any:
    """The ledger subscriber's decoder: the body as bytes, never parsed (it may be anything)."""
    return bytes(getattr(message, "body", b"") or b"")


async def record_copy(
    message: Any, record: Recorder, *, hold_s: float, park: Callable[[], Awaitable[None]]
) -> None:
    """Records a dead letter's copy (a consumer's own record, when it wrote one first, is kept);
    counts it when RabbitMQ killed it (a consumer's reject is counted by the consumer). Returns
    once it is recorded, or parked: held while the database is away, then parked at the back of
    the ledger queue (shared/retrying.py ``hold``); a copy that cannot be read is parked too."""
    try:
        letter = ledger_entry(message)
    except Exception:  # a bug here must not drop the copy: keep it for later
        log.exception("cannot read a dead letter's copy; parking it")
        await park()
        return
    if letter.reason != "rejected":
        announce(letter)
    await hold(lambda: record(letter), hold_s=hold_s, park=park, retry_on=(Exception,))
