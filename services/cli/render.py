"""The tables more than one command prints: a job's history and dead letters.

One history table for every place the CLI shows one (``jobtrail events``, ``jobtrail audit`` and
the demo), whether the events come from the API (``data`` holds the event's own fields) or from
the log's export records (attempt, worker and error lifted to the top).
"""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

HISTORY_COLUMNS = ("v", "time", "event", "actor", "reason", "attempt", "worker", "details")
_WHOLE = {"v", "time", "event", "attempt"}  # never folded; the others fold to fit


def _field(event: dict[str, Any], name: str, data_name: str | None = None) -> Any:
    """A field lifted to the top of an export record, or inside an API event's ``data``."""
    value = event.get(name)
    return value if value is not None else (event.get("data") or {}).get(data_name or name)


def details(event: dict[str, Any]) -> str:
    """One short line of what else an event says: its error first, then what it set."""
    data = event.get("data") or {}
    parts = []
    error_type = _field(event, "error_type")
    if error_type:
        parts.append(f"{error_type}: {_field(event, 'error_message') or ''}")
    if "job_type" in data:
        parts.append(f"{data['job_type']} on {data.get('queue')}, priority {data.get('priority')}")
    if data.get("retry_at"):
        parts.append(f"retry at {data['retry_at']}")
    if "result" in data:
        parts.append(f"result {json.dumps(data['result'])}")
    return "; ".join(parts)


def history_table(events: list[dict[str, Any]], title: str) -> Table:
    """A job's events, one row each, in the order given."""
    table = Table(title=title)
    for column in HISTORY_COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column in _WHOLE)
    for e in events:
        attempt = _field(e, "attempt")
        table.add_row(
            str(e["version"]),
            str(e["timestamp"]),
            e["event_type"],
            e["actor"],
            e.get("reason") or "",
            "" if attempt is None else str(attempt),
            _field(e, "worker", "worker_id") or "",
            details(e)[:300],
        )
    return table


def dead_letter_table(letters: list[dict[str, Any]], title: str) -> Table:
    """Dead letters the consumers recorded (the API's /v1/dead-letters)."""
    table = Table(title=title)
    for column in ("at", "queue", "reason", "job_id", "message_id", "error"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter["at"][:23],
            letter["queue"],
            letter["reason"],
            str(letter["job_id"] or "-"),
            str(letter["message_id"] or "-"),
            letter["error"][:160],
        )
    return table
