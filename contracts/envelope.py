"""The envelope that wraps every message on the bus."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION: Literal[1] = 1

T = TypeVar("T", bound=BaseModel)


def unencodable(value: Any, path: str = "") -> str | None:
    """Where ``value`` holds text that UTF-8 cannot encode (a lone surrogate, which Python's
    JSON parser lets through from a ``"\\ud800"`` escape), or None: such text can be neither
    stored in the log nor sent on the bus."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path or "(value)"
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found = unencodable(key, where) or unencodable(item, where)
            if found:
                return found.encode(errors="backslashreplace").decode()
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = unencodable(item, f"{path}[{index}]")
            if found:
                return found
    return None


class Strict(BaseModel):
    """Base of every contract model: unknown fields are rejected and instances are immutable;
    text must be valid Unicode (encodable as UTF-8) everywhere, payloads included."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=100_000)

    @field_validator("*", mode="after")
    @classmethod
    def _encodable(cls, value: Any) -> Any:
        if isinstance(value, str | dict | list | tuple):
            where = unencodable(value)
            if where is not None:
                at = "" if where == "(value)" else f" at {where}"
                raise ValueError(f"text is not valid Unicode (a lone surrogate){at}")
        return value


class Envelope(Strict, Generic[T]):
    """Carries one message with its identity, its causal links and its schema version."""

    message_id: UUID = Field(default_factory=uuid4)
    correlation_id: str = Field(min_length=1, max_length=128)
    causation_id: str | None = Field(default=None, max_length=128)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    schema_version: Literal[1] = SCHEMA_VERSION
    data: T
