"""How a job and its history are shown, each rendered in one place.

A job: the fields of its Redis hash, from the folded job (``full_view``) or from what one event
changes (``delta_view``), through one rendering per attribute (``RENDERED``); that hash read back
as the API's job (``api_view``); and the folded job as the API, ``jobtrail state`` and the audit
reads show it (``job_view``: the same two steps, so a job reads alike from Redis and from the log).

Its history: one record per event (``event_record``), the one shape of the API's
``/v1/jobs/{id}/events``, ``jobtrail events``, ``jobtrail audit`` and the exports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.domain import DEFAULT_TENANT
from shared.domain.job import Job
from shared.domain.status import MOVE_TARGET

MAX_RESULT_BYTES = 65_536


def plain(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 and UUIDs as strings, so it is JSON as it stands."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


def _json(value: Any) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    if len(text) > MAX_RESULT_BYTES:
        return json.dumps({"truncated": True, "bytes": len(text)})
    return text


def _flag(value: Any) -> str:
    return "1" if value else "0"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


RENDERED: dict[str, tuple[str, Callable[[Any], str]]] = {
    "attempt": ("attempt", str),
    "max_attempts": ("max_attempts", str),
    "queue": ("queue", str),
    "priority": ("priority", str),
    "run_at": ("run_at", _iso),
    "due_at": ("due_at", _iso),
    "worker_id": ("worker", _text),
    "result": ("result", _json),
    "error": ("error", _json),
    "cancel_requested": ("cancel_requested", _flag),
}
"""How each attribute of the folded job that the view keeps becomes a field of its hash (all
strings): one rendering for the whole job (``full_view``) and for what one event changes
(``delta_view``). Attributes not named here (the payload, leases, timeouts) stay in the log."""


def _rendered(attributes: Mapping[str, Any]) -> dict[str, str]:
    fields = {}
    for name, value in attributes.items():
        rendering = RENDERED.get(name)
        if rendering is not None:
            field, render = rendering
            fields[field] = render(value)
    return fields


def full_view(job: Job) -> dict[str, str]:
    """Every field of a job's hash, from the job folded from its events."""
    return {
        "id": str(job.id),
        "tenant": job.tenant,
        "type": job.job_type,
        "status": str(job.status),
        "created_at": _iso(job.created_on),
        "created_ms": str(int(job.created_on.timestamp() * 1000)),
        "updated_at": _iso(job.last_event_at),
        **_rendered({name: getattr(job, name) for name in RENDERED}),
    }


def delta_view(event: Job.Event) -> dict[str, str] | None:
    """The fields one event changes (``Job.Event.changes``, rendered as ``full_view`` renders
    them), or None when only a full refold can tell (Submitted, Requeued)."""
    if isinstance(event, (Job.Submitted, Job.Requeued)):
        return None
    move = event.move()
    assert move is not None
    fields = {"status": str(MOVE_TARGET[move]), "updated_at": _iso(event.timestamp)}
    return fields | _rendered(event.changes())


def api_view(view: Mapping[str, str]) -> dict[str, Any]:
    """A job's Redis hash (all strings, ``full_view``) as the API's typed job."""

    def number(name: str) -> int:
        return int(view.get(name) or 0)

    def loaded(name: str) -> Any:
        raw = view.get(name)
        return json.loads(raw) if raw else None

    return {
        "id": view["id"],
        "tenant": view.get("tenant") or DEFAULT_TENANT,
        "type": view["type"],
        "status": view["status"],
        "attempt": number("attempt"),
        "max_attempts": number("max_attempts"),
        "version": number("version"),
        "queue": view.get("queue", ""),
        "priority": number("priority"),
        "created_at": view.get("created_at") or None,
        "updated_at": view.get("updated_at") or None,
        "run_at": view.get("run_at") or None,
        "due_at": view.get("due_at") or None,
        "worker": view.get("worker") or None,
        "cancel_requested": view.get("cancel_requested") == "1",
        "result": loaded("result"),
        "error": loaded("error"),
    }


def job_view(job: Job) -> dict[str, Any]:
    """The folded job as the API's job (JSON-ready): its hash (``full_view``) read back
    (``api_view``), so the log and Redis show a job alike, with its whole result (the hash keeps
    at most ``MAX_RESULT_BYTES`` of it)."""
    hashed = full_view(job) | {"version": str(job.version)}
    return api_view(hashed) | {"result": plain(job.result)}


RECORD_FIELDS = (
    "notification_id",
    "job_id",
    "version",
    "timestamp",
    "event_type",
    "actor",
    "reason",
    "attempt",
    "worker",
    "error_type",
    "error_message",
    "correlation_id",
    "causation_id",
    "trace_id",
    "data",
    "chain_hash",
)
"""The keys of an event's record, in column order (the CSV header)."""

_ENVELOPE = {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_topic",
    "actor",
    "reason",
    "correlation_id",
    "causation_id",
    "trace_id",
}
_LIFTED = {
    "attempt": "attempt",
    "worker_id": "worker",
    "error_type": "error_type",
    "error_message": "error_message",
}


def event_record(
    notification_id: int, event: Job.Event, chain_hash: bytes | None = None
) -> dict[str, Any]:
    """What the API, the CLI and every audit export say about one event (JSON-ready): its place
    in the log, who and why, ``data`` (every other field of the event, as recorded), the
    attempt, worker and error lifted from it (empty when the event has none), and its chain hash
    (hex; docs/audit.md), so a record can be checked against the log."""
    state = vars(event)
    record: dict[str, Any] = {
        "notification_id": notification_id,
        "job_id": str(event.originator_id),
        "version": event.originator_version,
        "timestamp": event.timestamp.isoformat(),
        "event_type": type(event).__name__,
        "actor": state.get("actor"),
        "reason": state.get("reason"),
    }
    for name, field in _LIFTED.items():
        record[field] = plain(state.get(name))
    record |= {
        "correlation_id": state.get("correlation_id"),
        "causation_id": state.get("causation_id"),
        "trace_id": state.get("trace_id"),  # when tracing was on (docs/operations.md "Tracing")
        "data": {name: plain(value) for name, value in state.items() if name not in _ENVELOPE},
        "chain_hash": chain_hash.hex() if chain_hash else None,
    }
    return record
