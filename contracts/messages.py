"""Event and command messages as they travel on the bus."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, Field

from contracts.envelope import Envelope, Strict
from contracts.names import EventType

MAX_PAYLOAD_BYTES = 1_048_576
MAX_DEPTH = 32
JOB_TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$"


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


RUN_AT_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
RUN_AT_HORIZON = timedelta(days=366)
RUN_AT_RULE = (
    f"at or after {RUN_AT_EARLIEST.isoformat()} and at most {RUN_AT_HORIZON.days} days after "
    "now; a time in the past means at once"
)


def bounded_run_at(value: datetime) -> datetime:
    """Returns ``value`` when it is at or after RUN_AT_EARLIEST and at most RUN_AT_HORIZON after
    now.

    Both bounds keep every later use of the time (a timer row in PostgreSQL, a due time plus an
    offset, a backoff added to it) far from the ends of Python's and PostgreSQL's date ranges:
    year 9999 with a -14:00 offset is year 10000 in UTC, which Python cannot read back. A job
    scheduled more than a year ahead is almost surely a typo (a wrong year) and belongs in a
    calendar, not in a queue whose timers are swept on every tick. Both bounds also only ever
    widen with time: a value valid when a client sent it stays valid when a SubmitJob message is
    delivered after hours in a queue, and when a stored Submitted event is read again later.
    That is why the lower bound is a fixed date and not "now minus a tolerance": a command
    delayed by an outage must not turn into a dead letter. A past time simply means at once;
    before 2000 it is a mistake (year 0001, the Unix epoch as 0).
    """
    if value < RUN_AT_EARLIEST:
        raise ValueError(
            f"must be at or after {RUN_AT_EARLIEST.isoformat()} (got {value.isoformat()}); "
            "a past time means at once, one before 2000 is a mistake"
        )
    latest = datetime.now(UTC) + RUN_AT_HORIZON
    if value > latest:
        raise ValueError(
            f"must be at most {RUN_AT_HORIZON.days} days ahead, not after "
            f"{latest.isoformat(timespec='seconds')} (got {value.isoformat()})"
        )
    return value


RunAt = Annotated[AwareDatetime, AfterValidator(bounded_run_at)]
Payload = Annotated[dict[str, Any], AfterValidator(bounded_json)]
JobType = Annotated[str, Field(pattern=JOB_TYPE_PATTERN)]
QueueName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
TenantName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
"""shared.domain.job.TENANT_NAME (contracts import nothing of the services)."""


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
    run_at: RunAt | None = Field(
        default=None,
        description=f"when the job becomes due (ISO 8601 with a zone): {RUN_AT_RULE}",
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    queue: QueueName | None = None


class CancelJob(Strict):
    """Asks to cancel a job: at once when it is not running, cooperatively when it is."""

    job_id: UUID
    reason: str | None = Field(default=None, max_length=1024)


JobEventMessage = Envelope[JobEvent]


class SubmitJobMessage(Envelope[SubmitJob]):
    """A submission over the bus. The bus is a trusted interface (only the services' RabbitMQ
    users may publish commands): the message names the tenant its job belongs to."""

    tenant: TenantName = Field(
        default="default", description="the tenant the job belongs to (default: 'default')"
    )


CancelJobMessage = Envelope[CancelJob]
