"""The outbox relay: publishes committed events that a service consumes, then saves its position.

Publishes are persistent, mandatory (an unroutable message raises instead of being confirmed
away) and confirmed; the position advances only after every publish of a batch was confirmed.
A crash between publishing and saving republishes: consumers drop duplicates by asking the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import NAMESPACE_OID, uuid5

from faststream.rabbit import RabbitBroker
from faststream.rabbit.publisher import RabbitPublisher

from contracts.messages import JobEvent, JobEventMessage
from contracts.names import Topology
from shared.domain.job import Job
from shared.eventstore import AsyncJobStore
from shared.messaging import Routes

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "submitted": "A job was accepted (PENDING); the scheduler dispatches it when due.",
    "scheduled": "A job was dispatched for an attempt; routed to the work queue of its queue "
    "name (job.scheduled.<queue>), with the job's priority as the message priority.",
    "attempt_failed": "An attempt failed and the job is PENDING again, due at due_at.",
    "lease_expired": "A worker lost its lease; the job is PENDING again (due_at) or FAILED.",
    "requeued": "An operator gave a FAILED job more attempts.",
}

KINDS: dict[type[Job.Event], str] = {
    Job.Submitted: "submitted",
    Job.Scheduled: "scheduled",
    Job.AttemptFailed: "attempt_failed",
    Job.LeaseExpired: "lease_expired",
    Job.Requeued: "requeued",
}
"""The events a service consumes; the rest stay in the log (and reach Redis via the projector)."""

POSITION = "relay"


@dataclass(frozen=True)
class Outgoing:
    kind: str
    routing_key: str
    body: bytes
    message_id: str
    correlation_id: str
    priority: int | None


def to_message(notification_id: int, event: Job.Event) -> Outgoing | None:
    """The bus message of an event, or None when no service consumes that kind."""
    kind = KINDS.get(type(event))
    if kind is None:
        return None
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
    return Outgoing(
        kind, key, envelope.model_dump_json().encode(), message_id, event.correlation_id, priority
    )


def declare_publishers(
    broker: RabbitBroker, routes: Routes, timeout_s: float
) -> dict[str, RabbitPublisher]:
    """One documented publisher per kind: persistent, mandatory, confirmed within timeout_s."""
    return {
        kind: broker.publisher(
            exchange=routes.events,
            routing_key="job.scheduled.{queue}" if kind == "scheduled" else f"job.{kind}",
            mandatory=True,
            persist=True,
            timeout=timeout_s,
            content_type="application/json",
            schema=JobEventMessage,
            title=f"relay/{kind}",
            description=description,
        )
        for kind, description in DESCRIPTIONS.items()
    }


class Relay:
    """Follows the log from its saved position and publishes what consumers need."""

    def __init__(
        self,
        store: AsyncJobStore,
        broker: RabbitBroker,
        routes: Routes,
        wait: Callable[[float], Awaitable[None]],
        *,
        batch: int = 500,
        poll_s: float = 1.0,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.store, self.wait = store, wait
        self.batch, self.poll_s = batch, poll_s
        self.publishers = declare_publishers(broker, routes, publish_timeout_s)
        self.published = 0
        self.failures = 0

    async def run(self) -> None:
        position = await self.store.position(POSITION)
        log.info("relay starts after notification %d", position)
        backoff = 0.2
        while True:
            entries = await self.store.events_after(position, self.batch, list(KINDS))
            if not entries:
                await self.wait(self.poll_s)
                continue
            outgoing = [m for n, e in entries if (m := to_message(n, e)) is not None]
            try:
                await asyncio.gather(*(self._publish(m) for m in outgoing))
            except Exception as exc:  # nacked, timed out, returned (unroutable) or disconnected
                self.failures += 1
                log.error("relay: publishing after %d failed, will retry: %r", position, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            position = entries[-1][0]
            await self.store.set_position(POSITION, position)
            self.published += len(outgoing)

    async def _publish(self, message: Outgoing) -> None:
        await self.publishers[message.kind].publish(
            message.body,
            routing_key=message.routing_key,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            priority=message.priority,
        )
