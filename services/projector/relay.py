"""The outbox relay: the backstop that makes sure every committed event a service consumes is
published, then saves its position.

Writers publish what they commit themselves and mark it in Redis once confirmed
(shared/publishing.py). The relay still reads every relayed event of the log in commit order:
a marked one is skipped (its mark removed once the relay is past it); an unmarked one is left
for ``grace_s`` (looked at again every ``check_s``), in case its writer's confirm is still on the
way, then published as before. An event is old enough once the relay has seen it for the grace,
or once its own timestamp is that old (a relay catching up does not wait again for each batch; a
writer's clock running late only makes a duplicate). Without marks (``marks=None``: publishing
on commit is off) the relay publishes everything at once. When Redis cannot be read, no event
counts as marked: duplicates are harmless, a loss is not.

Publishes are persistent, mandatory (an unroutable message raises instead of being confirmed
away) and confirmed; the position advances only past events that were confirmed or skipped.
A crash between publishing and saving republishes: consumers drop duplicates by asking the log.
An event that can never become a message (or a row that does not decode) is quarantined
(``shared.quarantine``): recorded, counted, its job FAILED if it still stands there, and the
relay goes on past it instead of stopping at it for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from faststream.rabbit import RabbitBroker
from redis.exceptions import RedisError

from shared import quarantine
from shared.domain import Job
from shared.eventstore import AsyncJobStore, Undecodable
from shared.health import Progress
from shared.messaging import Routes
from shared.metrics import RELAY_MESSAGES
from shared.outbox import KINDS, Outgoing, PoisonEventError, to_message
from shared.publishing import RelayMarks, declare_publishers, mark_of, send

log = logging.getLogger(__name__)

POSITION = "relay"


@dataclass
class _Held:
    """An event read from the log whose message is neither published nor skipped yet."""

    notification_id: int
    event: Job.Event
    message: Outgoing
    seen: float  # time.monotonic() when the relay first read it
    mark: str = ""  # its writer's mark (computed once: it is looked up every check)

    def __post_init__(self) -> None:
        self.mark = mark_of(self.notification_id, self.event)


class Relay:
    """Follows the log from its saved position and publishes what consumers need and no writer
    has published."""

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
        marks: RelayMarks | None = None,
        grace_s: float = 2.0,
        check_s: float = 0.25,
    ) -> None:
        self.store, self.wait, self.actor = store, wait, actor
        self.batch, self.poll_s = batch, poll_s
        self.marks, self.grace_s, self.check_s = marks, grace_s, check_s
        self.publishers = declare_publishers(broker, routes, publish_timeout_s)
        self.failures = 0
        self.progress = Progress()
        """Where the relay is and when it last moved (its readiness, shared/health.py)."""

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.progress.active = False

    async def _run(self) -> None:
        position = await self.store.position(POSITION)
        log.info("relay starts after notification %d", position)
        progress = self.progress
        progress.start(position)
        read = position  # the last notification id read; held: what is read but not done
        held: list[_Held] = []
        backoff = 0.2
        while True:
            fresh = 0
            if len(held) < self.batch:
                skipped: list[Undecodable] = []
                limit = self.batch - len(held)
                entries = await self.store.events_after(read, limit, list(KINDS), skipped)
                if entries or skipped:
                    held += await self._messages(entries, skipped)
                    read = max([n for n, _ in entries] + [u.notification_id for u in skipped])
                    fresh = len(entries) + len(skipped)
            if not held:
                if read > position:
                    position = read
                    await self._advance(position)
                    progress.advanced(position)
                if not fresh:
                    progress.idle()
                    await self.wait(self.poll_s)
                continue
            done, due = await self._ready(held)
            try:
                await asyncio.gather(*(send(self.publishers, h.message, "relay") for h in due))
            except Exception as exc:  # nacked, timed out, returned (unroutable) or disconnected
                self.failures += 1
                log.error("relay: publishing after %d failed, will retry: %r", position, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            RELAY_MESSAGES.labels("published").inc(len(due))
            RELAY_MESSAGES.labels("skipped").inc(done - len(due))
            held = held[done:]
            reached = held[0].notification_id - 1 if held else read
            if reached > position:
                position = reached
                await self._advance(position)
                progress.advanced(position)
            if held:  # the oldest is waiting for its writer's mark, or for its age
                await asyncio.sleep(self.check_s)

    async def _ready(self, held: list[_Held]) -> tuple[int, list[_Held]]:
        """How many of the held events, from the oldest on, are done with once ``due`` (those
        no writer marked, old enough) are published; the rest wait for a mark or their age."""
        marked = await self._marked(held)
        now, wall = time.monotonic(), datetime.now(UTC)
        due: list[_Held] = []
        done = 0
        for h in held:
            if h.mark in marked:
                pass
            elif (
                self.marks is None
                or now - h.seen >= self.grace_s
                or (wall - h.event.timestamp).total_seconds() >= self.grace_s
            ):
                due.append(h)
            else:
                break
            done += 1
        return done, due

    async def _marked(self, held: list[_Held]) -> set[str]:
        if self.marks is None:
            return set()
        try:
            return await self.marks.marked([h.mark for h in held])
        except (RedisError, OSError) as exc:  # unknown: publish them (a duplicate at worst)
            log.warning("relay: marks unreadable (%r); publishing unmarked events", exc)
            return set()

    async def _advance(self, position: int) -> None:
        await self.store.set_position(POSITION, position)
        if self.marks is not None:
            try:
                await self.marks.forget(position)
            except (RedisError, OSError) as exc:  # trimmed later by the writers
                log.debug("relay: marks not removed: %r", exc)

    async def _messages(
        self, entries: list[tuple[int, Job.Event]], skipped: list[Undecodable]
    ) -> list[_Held]:
        """The batch's messages; what cannot become one is quarantined, in log order."""
        for u in skipped:  # its job cannot even be loaded: record it, the job stays as it is
            poison = quarantine.Poison.undecodable("relay", u)
            await quarantine.record(self.store, poison, "undecodable")
        poisons: list[quarantine.Poison] = []
        held: list[_Held] = []
        seen = time.monotonic()
        for notification_id, event in entries:
            try:
                message = to_message(notification_id, event)
            except PoisonEventError as exc:
                poisons.append(
                    quarantine.Poison.of("relay", notification_id, event, exc.__cause__ or exc)
                )
                continue
            if message is not None:
                held.append(_Held(notification_id, event, message, seen))
        for poison in poisons:
            action = await quarantine.fail_job(self.store, poison, self.actor)
            await quarantine.record(self.store, poison, action)
        return held
