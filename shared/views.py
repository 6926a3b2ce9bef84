"""How a job is shown: the fields of its Redis hash, from the folded job (``full_view``) or from
what one event changes (``delta_view``), through one rendering per attribute (``RENDERED``); and
that hash read back as the API's job (``api_view``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from shared.domain import DEFAULT_TENANT
from shared.domain.job import Job
from shared.domain.status import MOVE_TARGET

MAX_RESULT_BYTES = 65_536


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
