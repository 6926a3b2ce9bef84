"""The tables more than one command prints: a job's history and dead letters.

One history table for every place the CLI shows one (``jobtrail events``, ``jobtrail audit`` and
the demo), of the one record of an event (``shared.views.event_record``) that the API's
``/v1/jobs/{id}/events`` and the exports both give.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from rich.table import Table

HISTORY_COLUMNS = ("v", "time", "event", "attempt", "actor", "details")


def _utc(value: Any) -> datetime | None:
    """An ISO time in UTC (the log's), or None for anything else."""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at if at.utcoffset() == timedelta(0) else None


def _time(value: Any, day: str | None) -> str:
    """An event's time in UTC to the millisecond, without its date when that is ``day``;
    anything else as it is."""
    at = _utc(value)
    if at is None:
        return str(value)
    clock = f"{at:%H:%M:%S}.{at.microsecond // 1000:03d}"
    return clock if f"{at:%Y-%m-%d}" == day else f"{at:%Y-%m-%d} {clock}"


def details(event: dict[str, Any], day: str | None = None) -> str:
    """One short line of what else an event says: its error first, then its reason, the worker
    when not the actor, and what it set."""
    data = event.get("data") or {}
    parts = []
    if event.get("error_type"):
        parts.append(f"{event['error_type']}: {event.get('error_message') or ''}")
    if event.get("reason"):
        parts.append(f"reason: {event['reason']}")
    worker = event.get("worker")
    if worker and worker != event.get("actor"):
        parts.append(f"worker {worker}")
    if "job_type" in data:
        parts.append(f"{data['job_type']} on {data.get('queue')}, priority {data.get('priority')}")
    if data.get("retry_at"):
        parts.append(f"retry at {_time(data['retry_at'], day)}")
    if "result" in data:
        parts.append(f"result {json.dumps(data['result'])}")
    return "; ".join(parts)


def history_table(events: list[dict[str, Any]], title: str) -> Table:
    """A job's events, one row each, in the order given; times in UTC, the day in the title when
    every event has the same one."""
    times = [_utc(e["timestamp"]) for e in events]
    days = {f"{at:%Y-%m-%d}" if at else None for at in times}
    day = days.pop() if len(days) == 1 else None
    table = Table(title=f"{title}, {day} UTC" if day else f"{title} (UTC)")
    for column in HISTORY_COLUMNS:
        table.add_column(
            column,
            overflow="fold",
            no_wrap=column in ("v", "event", "attempt"),
        )
    for e in events:
        attempt = e.get("attempt")
        table.add_row(
            str(e["version"]),
            _time(e["timestamp"], day),
            e["event_type"],
            "" if attempt is None else str(attempt),
            e["actor"] or "",
            details(e, day)[:300],
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
