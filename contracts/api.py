"""What the HTTP API answers: the response models of the jobs endpoints.

The submitter answers with them (services/submitter) and the Python client (jobtrail.client)
reads its answers with them: one definition of the wire format for both sides, beside the
messages of the bus. Request models the submitter alone checks stay with it.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

StatusName = Literal["PENDING", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]

ENDED: frozenset[StatusName] = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
"""The statuses a job stays in unless someone acts (a FAILED job can be requeued): what
``GET /v1/jobs/{id}/wait`` waits for."""


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
    trace_id: str | None = Field(
        default=None,
        description="the OpenTelemetry trace the event was written in (32 hex digits), when "
        "tracing was on",
    )
    data: dict[str, Any] = Field(description="every other field of the event, as recorded")
    chain_hash: str | None = Field(description="the event's SHA-256 chain hash (hex)")


class BatchItem(BaseModel):
    index: int
    id: UUID | None = None
    status: StatusName | None = None
    replayed: bool = False
    errors: list[dict[str, Any]] | None = None


class Page(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None
