"""Event and command messages as they travel on the bus."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, Field

from contracts.envelope import Envelope, Strict

MAX_PAYLOAD_BYTES = 1_048_576
MAX_DEPTH = 32
JOB_TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$"

EventType = Literal[
    "Submitted",
    "Scheduled",
    "Started",
    "Completed",
    "AttemptFailed",
    "Failed",
    "LeaseExpired",
    "CancelRequested",
    "Cancelled",
    "Requeued",
]


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def bounded_json(value: Any) -> Any:
    """Returns ``value`` when it nests at most MAX_DEPTH levels and encodes to at most 1 MiB."""
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"encodes to {size} bytes, more than {MAX_PAYLOAD_BYTES}")
    return value


Payload = Annotated[dict[str, Any], AfterValidator(bounded_json)]
JobType = Annotated[str, Field(pattern=JOB_TYPE_PATTERN)]
QueueName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class JobEvent(Strict):
    """A committed job event that some service consumes, as the relay publishes it.

    Only what consumers need travels: the log holds the rest. ``version`` and ``attempt`` let a
    consumer drop a stale or duplicate delivery by asking the log.
    """

    job_id: UUID
    version: int = Field(ge=1)
    notification_id: int = Field(ge=1)
    event_type: EventType
    attempt: int | None = Field(default=None, ge=0)
    queue: QueueName | None = None
    priority: int | None = Field(default=None, ge=0, le=9)
    due_at: datetime | None = None


class SubmitJob(Strict):
    """Asks for a new job; with an idempotency key, a repeat returns the first job."""

    type: JobType
    payload: Payload = Field(default_factory=dict)
    priority: int | None = Field(default=None, ge=0, le=9)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    run_at: AwareDatetime | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    queue: QueueName | None = None


class CancelJob(Strict):
    """Asks to cancel a job: at once when it is not running, cooperatively when it is."""

    job_id: UUID
    reason: str | None = Field(default=None, max_length=1024)


JobEventMessage = Envelope[JobEvent]
SubmitJobMessage = Envelope[SubmitJob]
CancelJobMessage = Envelope[CancelJob]
