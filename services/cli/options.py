"""The CLI's one reading of times and job ids given on the command line.

A bad value ends the command with exit code 2 and a message naming the option and what to type.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from services.cli.console import fail

TIME_EXAMPLE = "2026-11-29T09:00:00Z"
ZONED = f"ISO 8601 with a zone, e.g. {TIME_EXAMPLE}"


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time with a zone (a trailing Z is UTC); a CLI error naming ``option`` else."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} {text!r} is not an ISO 8601 time; e.g. {TIME_EXAMPLE}", 2) from None
    if value.tzinfo is None:
        raise fail(f"{option} {text!r} has no time zone; add Z (UTC) or +HH:MM, e.g. {text}Z", 2)
    return value


def optional_time(text: str | None, option: str) -> datetime | None:
    """``parse_time`` of an option that may be left out."""
    return None if text is None else parse_time(text, option)


def parse_job_id(text: str, option: str = "JOB") -> UUID:
    """A job id (a UUID); a CLI error naming ``option`` else."""
    try:
        return UUID(text)
    except ValueError:
        raise fail(
            f"{option} {text!r} is not a job id (a UUID as printed by `jobtrail submit`)", 2
        ) from None
