"""Who caused an event, bounded by what the bus can carry.

A cause's ids travel in every message the relay builds from the event, and the log is
append-only: a value that a message would refuse, once recorded, could never be relayed. So the
cause refuses it when the event is made (docs/guarantees.md, "Poison events").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE_ID = 128
"""The envelope's bound on correlation and causation ids (contracts.envelope.Envelope)."""
MAX_ACTOR = 200
MAX_REASON = 1024
"""The bound of a cancel's reason (contracts.messages.CancelJob)."""
MESSAGE_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_MESSAGE_ID}}}")
"""Printable ASCII: a message id travels in the envelope and as an AMQP short string (255
bytes), so 128 characters must also be at most 128 bytes."""
TRACE_ID = re.compile(r"(?!0{32})[0-9a-f]{32}")
SPAN_ID = re.compile(r"(?!0{16})[0-9a-f]{16}")
"""W3C trace context ids (lowercase hex, not all zeros): what an event may record of the trace
it was written in (shared/tracing.py)."""


def storable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (a lone surrogate does not, and the log refuses it)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode escaped, for error messages about bad input."""
    return text.encode(errors="backslashreplace").decode()


def describe(exc: BaseException, limit: int = 2000) -> str:
    """``Type: message`` of an error, escaped and bounded: safe to store and to show."""
    return printable(f"{type(exc).__name__}: {exc}")[:limit]


@dataclass(frozen=True)
class Cause:
    """Who caused an event (``service:scheduler/a1``, ``worker:w1``, ``api:alice``) and why.

    Its ids travel in every message relayed from the event, so it refuses what the message
    envelope would refuse: a value accepted here can never stop the relay later.
    """

    actor: str
    correlation_id: str
    causation_id: str | None = None
    reason: str | None = None
    trace_id: str | None = None
    """The trace (and its span) the event was written in, when tracing is on; both or none."""
    span_id: str | None = None

    def __post_init__(self) -> None:
        if self.trace_id is not None or self.span_id is not None:
            if not (isinstance(self.trace_id, str) and TRACE_ID.fullmatch(self.trace_id)):
                raise ValueError("trace_id must be 32 lowercase hex digits, not all zeros")
            if not (isinstance(self.span_id, str) and SPAN_ID.fullmatch(self.span_id)):
                raise ValueError("span_id must be 16 lowercase hex digits, not all zeros")
        for name in ("correlation_id", "causation_id"):
            value = getattr(self, name)
            if (value is not None or name == "correlation_id") and not (
                isinstance(value, str) and MESSAGE_ID.fullmatch(value)
            ):
                raise ValueError(f"{name} must be 1 to {MAX_MESSAGE_ID} printable ASCII characters")
        if not (isinstance(self.actor, str) and 0 < len(self.actor) <= MAX_ACTOR):
            raise ValueError(f"actor must be 1 to {MAX_ACTOR} characters")
        if self.reason is not None and len(self.reason) > MAX_REASON:
            raise ValueError(f"reason must be at most {MAX_REASON} characters")
        for name in ("actor", "reason"):
            value = getattr(self, name)
            if value is not None and not storable(value):
                raise ValueError(f"{name} is not valid Unicode (a lone surrogate)")

    @classmethod
    def following(cls, actor: str, correlation_id: str, message_id: str) -> Cause:
        """The cause of what a service records for a message it consumes from jobtrail itself.

        A message already on the bus was accepted once: an id this cause would refuse (written
        by an older version, say) is replaced, never a reason to refuse the message, which
        would leave its job stuck. The message id stands in for a correlation id it cannot
        carry; an unusable message id by its SHA-256.
        """
        causation = (
            message_id
            if MESSAGE_ID.fullmatch(message_id)
            else hashlib.sha256(message_id.encode(errors="backslashreplace")).hexdigest()
        )
        correlation = correlation_id if MESSAGE_ID.fullmatch(correlation_id) else causation
        return cls(actor, correlation, causation)

    def meta(self) -> dict[str, Any]:
        """The event fields of this cause; the trace ids only when there is a trace (an event
        written without one is stored exactly as before tracing existed)."""
        meta = {
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "reason": self.reason,
        }
        if self.trace_id is not None:
            meta["trace_id"], meta["span_id"] = self.trace_id, self.span_id
        return meta
