"""The API's request and response models (the OpenAPI document's schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.domain.cause import storable

StatusName = Literal["PENDING", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


class JobView(BaseModel):
    """A job's current state."""

    id: UUID
    tenant: str = Field(description="the tenant the job belongs to (its submitting key's)")
    type: str
    status: StatusName
    attempt: int
    max_attempts: int
    version: int
    queue: str
    priority: int
    created_at: str | None
    updated_at: str | None
    run_at: str | None = None
    due_at: str | None = None
    worker: str | None = None
    cancel_requested: bool = False
    result: Any = None
    error: dict[str, Any] | None = None
    progress: dict[str, str] | None = None
    source: Literal["cache", "log"] = Field(description="Redis, or the log when Redis had none")


class Accepted(BaseModel):
    id: UUID
    status: StatusName
    type: str
    version: int
    replayed: bool = Field(description="true when the idempotency key matched an earlier job")


class EventView(BaseModel):
    """One event of a job's history: the record ``jobtrail audit`` exports (docs/audit.md)."""

    notification_id: int = Field(description="the event's position in the log (commit order)")
    job_id: UUID
    version: int
    timestamp: str
    event_type: str
    actor: str
    reason: str | None
    attempt: int | None = Field(description="the attempt, when the event names one")
    worker: str | None = Field(description="the worker, when the event names one")
    error_type: str | None
    error_message: str | None
    correlation_id: str
    causation_id: str | None
    data: dict[str, Any] = Field(description="every other field of the event, as recorded")
    chain_hash: str | None = Field(description="the event's SHA-256 chain hash (hex)")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=1024)


def _text_without_surrogates(value: str) -> str:
    """Text that can be stored (strict UTF-8): a JSON escape can smuggle in a lone surrogate."""
    if not storable(value):
        raise ValueError("is not valid Unicode (a lone surrogate)")  # a 422 naming the field
    return value


class RequeueRequest(BaseModel):
    """What an operator says when giving a FAILED job more attempts."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, AfterValidator(_text_without_surrogates)] = Field(
        min_length=1,
        max_length=1024,
        pattern=r"\S",
        description="why the job runs again (required: it is recorded in the job's history)",
    )
    extra_attempts: int = Field(
        default=1,
        ge=1,
        le=100,
        description="attempts added to those already made (the job may run this many more times)",
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class BatchItem(BaseModel):
    index: int
    id: UUID | None = None
    status: StatusName | None = None
    replayed: bool = False
    errors: list[dict[str, Any]] | None = None


class DeadLetterView(BaseModel):
    """A message a consumer rejected to the dead-letter queue, as recorded."""

    id: int
    at: datetime
    queue: str
    reason: str = Field(
        description="invalid, rejected or error (a consumer), or delivery_limit (RabbitMQ)"
    )
    job_id: UUID | None = Field(description="the job the body names, when it names one")
    message_id: str | None
    correlation_id: str | None
    error: str
    body: str = Field(description="the body's first 4 KiB, undecodable bytes replaced")


class Page(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None
