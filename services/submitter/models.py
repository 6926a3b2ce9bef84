"""The API's request models and the answers only the submitter gives (the OpenAPI document's
schemas); the answers a client reads too are in contracts/api.py."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contracts.api import Accepted, BatchItem, EventView, JobView, Page, StatusName
from shared.domain.cause import storable

__all__ = [
    "Accepted",
    "BatchItem",
    "BatchRequest",
    "CancelRequest",
    "DeadLetterView",
    "EventView",
    "JobView",
    "Page",
    "RequeueRequest",
    "StatusName",
]


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
