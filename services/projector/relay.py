"""The outbox relay: publishes committed events that a service consumes, then saves its position.

Publishes are persistent, mandatory (an unroutable message raises instead of being confirmed
away) and confirmed; the position advances only after every publish of a batch was confirmed.
A crash between publishing and saving republishes: consumers drop duplicates by asking the log.
An event that can never become a message (or a row that does not decode) is quarantined
(``shared.quarantine``): recorded, counted, its job FAILED if it still stands there, and the
relay goes on past it instead of stopping at it for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from faststream.rabbit import RabbitBroker
from faststream.rabbit.publisher import RabbitPublisher

from contracts.messages import JobEventMessage
from shared import quarantine
from shared.domain import Job
from shared.eventstore import AsyncJobStore, Undecodable
from shared.messaging import Routes
from shared.outbox import KINDS, Outgoing, PoisonEventError, to_message

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "scheduled": "A job was dispatched for an attempt; routed to the work queue of its queue "
    "name (job.scheduled.<queue>), with the job's priority as the message priority.",
    "attempt_failed": "An attempt failed and the job is PENDING again, due at due_at.",
    "lease_expired": "A worker lost its lease; the job is PENDING again (due_at) or FAILED.",
    "requeued": "An operator gave a FAILED job more attempts.",
}

POSITION = "relay"


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
        actor: str = "projector/relay",
    ) -> None:
        self.store, self.wait, self.actor = store, wait, actor
        self.batch, self.poll_s = batch, poll_s
        self.publishers = declare_publishers(broker, routes, publish_timeout_s)
        self.failures = 0

    async def run(self) -> None:
        position = await self.store.position(POSITION)
        log.info("relay starts after notification %d", position)
        backoff = 0.2
        while True:
            skipped: list[Undecodable] = []
            entries = await self.store.events_after(position, self.batch, list(KINDS), skipped)
            if not entries and not skipped:
                await self.wait(self.poll_s)
                continue
            outgoing = await self._messages(entries, skipped)
            try:
                await asyncio.gather(*(self._publish(m) for m in outgoing))
            except Exception as exc:  # nacked, timed out, returned (unroutable) or disconnected
                self.failures += 1
                log.error("relay: publishing after %d failed, will retry: %r", position, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            position = max([n for n, _ in entries] + [u.notification_id for u in skipped])
            await self.store.set_position(POSITION, position)

    async def _messages(
        self, entries: list[tuple[int, Job.Event]], skipped: list[Undecodable]
    ) -> list[Outgoing]:
        """The batch's messages; what cannot become one is quarantined, in log order."""
        for u in skipped:  # its job cannot even be loaded: record it, the job stays as it is
            poison = quarantine.Poison.undecodable("relay", u)
            await quarantine.record(self.store, poison, "undecodable")
        poisons: list[quarantine.Poison] = []
        outgoing: list[Outgoing] = []
        for notification_id, event in entries:
            try:
                message = to_message(notification_id, event)
            except PoisonEventError as exc:
                poisons.append(
                    quarantine.Poison.of("relay", notification_id, event, exc.__cause__ or exc)
                )
                continue
            if message is not None:
                outgoing.append(message)
        for poison in poisons:
            action = await quarantine.fail_job(self.store, poison, self.actor)
            await quarantine.record(self.store, poison, action)
        return outgoing

    async def _publish(self, message: Outgoing) -> None:
        await self.publishers[message.kind].publish(
            message.body,
            routing_key=message.routing_key,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            priority=message.priority,
        )
