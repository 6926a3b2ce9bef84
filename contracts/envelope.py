"""The envelope that wraps every message on the bus."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1

T = TypeVar("T", bound=BaseModel)


class Strict(BaseModel):
    """Base of every contract model: unknown fields are rejected and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=100_000)


class Envelope(Strict, Generic[T]):
    """Carries one message with its identity, its causal links and its schema version."""

    message_id: UUID = Field(default_factory=uuid4)
    correlation_id: str = Field(min_length=1, max_length=128)
    causation_id: str | None = Field(default=None, max_length=128)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    schema_version: Literal[1] = SCHEMA_VERSION
    data: T
