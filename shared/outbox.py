"""Committed events as bus messages: what the relay publishes, and what the scheduler sends
again for a job no worker claimed."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import NAMESPACE_OID, uuid5

from contracts.messages import JobEvent, JobEventMessage
from contracts.names import Topology, kind_of
from shared.domain.job import Job

KINDS: dict[type[Job.Event], str] = {
    kind: kind_of(kind.__name__)
    for kind in (Job.Scheduled, Job.AttemptFailed, Job.LeaseExpired, Job.Requeued)
}
"""The events a service consumes; the rest stay in the log (and reach Redis via the projector).

Submitted is not among them: the submitter dispatches a job due at once in the transaction that
accepts it (``Job.dispatch_if_due``), and a job due later waits for its timer, which the
scheduler leader sweeps on the database's clock. The scheduler still consumes ``job.submitted``
messages (from a relay of an earlier release, or a replayed dead letter)."""


@dataclass(frozen=True)
class Outgoing:
    kind: str
    routing_key: str
    body: bytes
    message_id: str
    correlation_id: str
    priority: int | None
    trace_id: str | None = None
    """The trace its event was written in (shared/tracing.py), continued by its publisher."""
    span_id: str | None = None


class PoisonEventError(Exception):
    """The event can never become a bus message: retrying cannot help (see shared.quarantine)."""


MAX_AMQP_SHORT_STRING = 255


def to_message(notification_id: int, event: Job.Event) -> Outgoing | None:
    """The bus message of an event, or None when no service consumes that kind; raises
    PoisonEventError when the event cannot be one (a value the contract refuses, say)."""
    kind = KINDS.get(type(event))
    if kind is None:
        return None
    try:
        return _build(kind, notification_id, event)
    except Exception as exc:  # building is pure: what fails here fails every time
        raise PoisonEventError(f"{type(exc).__name__}: {exc}") from exc


def _build(kind: str, notification_id: int, event: Job.Event) -> Outgoing:
    queue = getattr(event, "queue", None)
    priority = getattr(event, "priority", None)
    due_at = getattr(event, "run_at", None) or getattr(event, "retry_at", None)
    data = JobEvent(
        job_id=event.originator_id,
        version=event.originator_version,
        notification_id=notification_id,
        event_type=type(event).__name__,
        attempt=getattr(event, "attempt", None),
        queue=queue,
        priority=priority,
        due_at=due_at,
    )
    message_id = str(uuid5(NAMESPACE_OID, f"{event.originator_id}/{event.originator_version}"))
    envelope = JobEventMessage(
        message_id=message_id,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        occurred_at=event.timestamp,
        data=data,
    )
    key = Topology.event_key(kind, queue)
    for name, value in (("routing key", key), ("correlation id", event.correlation_id)):
        if len(value.encode()) > MAX_AMQP_SHORT_STRING:  # AMQP would refuse it at publish
            raise ValueError(f"{name} is over {MAX_AMQP_SHORT_STRING} bytes")
    return Outgoing(
        kind,
        key,
        envelope.model_dump_json().encode(),
        message_id,
        event.correlation_id,
        priority,
        event.trace_id,
        event.span_id,
    )
