"""Publishing committed events from the writer that committed them, with the relay as backstop.

Without this, every message a service consumes waits for a hop: COMMIT, NOTIFY, the projector's
relay reads the log, publishes and waits for the confirm. The writer that has just committed
already holds the events and their notification ids (``AsyncJobStore.on_commit``), so its
``Publisher`` builds the same messages (``shared.outbox.to_message``) and publishes them at once,
in the background, persistent, mandatory and confirmed. Once the broker has confirmed one, the
writer marks it in Redis (``RelayMarks``); the relay still reads every event of the log in order,
skips the marked ones and publishes the rest once they are older than its grace
(services/projector/relay.py). So nothing committed goes unpublished (the outbox's guarantee is
the relay's, as before), and a message goes out twice at worst: when a mark is missing (Redis
away, a mark lost, a confirm later than the grace), which consumers drop by version.

A mark is written only after the broker confirmed that exact message, and names the row it is
for (notification id, job, version), so a stale mark (another database, a reset log) can never
match a row it was not written for: skipping a row needs proof that its own message was sent.

The publisher never holds a caller up, and never grows without bound: the commit hook only
queues (``max_pending`` waiting or in flight); when that is full, or the broker is slow or away,
the message is left to the relay.

Kept whole though over 300 lines: it is one mechanism, publish-then-mark. The publisher's
confirm loop, the marks it writes (``RelayMarks``, ``mark_of``: what the relay checks a row
against) and the wiring of both into a service are one rule (a mark exists only for a message
the broker confirmed, and names its row); split, that rule would be kept in step across modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence

from faststream.rabbit import RabbitBroker
from faststream.rabbit.publisher import RabbitPublisher
from redis.asyncio import Redis
from redis.exceptions import RedisError

from contracts.messages import JobEventMessage
from shared import tracing
from shared.domain.job import Job
from shared.eventstore import AsyncJobStore, Outcome
from shared.messaging import Routes
from shared.metrics import PUBLISH_MARKS_FAILED, PUBLISHED_ON_COMMIT
from shared.outbox import KINDS, Outgoing, PoisonEventError, to_message
from shared.settings import BusSettings, PublishSettings, RedisSettings

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "scheduled": "A job was dispatched for an attempt; routed to the work queue of its queue "
    "name (job.scheduled.<queue>), with the job's priority as the message priority.",
    "attempt_failed": "An attempt failed and the job is PENDING again, due at due_at.",
    "lease_expired": "A worker lost its lease; the job is PENDING again (due_at) or FAILED.",
    "requeued": "An operator gave a FAILED job more attempts.",
}


def declare_publishers(
    broker: RabbitBroker, routes: Routes, timeout_s: float
) -> dict[str, RabbitPublisher]:
    """One documented publisher per kind: persistent, mandatory, confirmed within timeout_s.
    The relay and every writer's Publisher send through these (declare them before the broker
    starts)."""
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


async def send(
    publishers: dict[str, RabbitPublisher], message: Outgoing, by: str = "publisher"
) -> None:
    """Publishes one message and returns once the broker confirmed it (raises otherwise); with
    tracing on and a traced event, in a span of ``by`` that the ``traceparent`` header names."""
    if tracing.ENABLED and message.trace_id is not None:
        with tracing.producer(
            f"{by} {message.routing_key}",
            message.trace_id,
            message.span_id,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        ) as headers:
            await publishers[message.kind].publish(
                message.body,
                routing_key=message.routing_key,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                priority=message.priority,
                headers=headers,
            )
        return
    await publishers[message.kind].publish(
        message.body,
        routing_key=message.routing_key,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        priority=message.priority,
    )


def mark_of(notification_id: int, event: Job.Event) -> str:
    """The mark of one row of the log: its notification id, job, version and the event's time
    in microseconds (a log reset restarts notification ids, and a job id can come back from the
    same idempotency key: the time tells such rows apart)."""
    stamp = round(event.timestamp.timestamp() * 1_000_000)
    return f"{notification_id}:{event.originator_id}:{event.originator_version}:{stamp}"


class RelayMarks:
    """Rows of the log whose message a writer published and had confirmed: the sorted set
    ``<prefix>:relayed``, each mark scored by its notification id. Writers add; the relay reads
    and removes those at or below its position; the set is trimmed to its ``max_marks`` newest
    (a trimmed mark costs a duplicate, never a loss)."""

    def __init__(self, redis: Redis, prefix: str, max_marks: int, scope: str = "") -> None:
        # ``scope``: the events exchange the messages went to; a writer on another topology
        # (same Redis prefix) confirms to its own queues, and its marks must not count here
        key = f"{prefix}:relayed" + (f":{scope}" if scope else "")
        self.redis, self.key, self.max_marks = redis, key, max_marks

    async def mark(self, rows: Sequence[tuple[int, str]]) -> None:
        """Marks (notification id, mark) pairs as published."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.key, {mark: notification_id for notification_id, mark in rows})
        pipe.zremrangebyrank(self.key, 0, -(self.max_marks + 1))
        await pipe.execute()

    async def marked(self, marks: Sequence[str]) -> set[str]:
        """Which of these marks are there."""
        if not marks:
            return set()
        scores = await self.redis.zmscore(self.key, list(marks))
        return {mark for mark, score in zip(marks, scores, strict=True) if score is not None}

    async def forget(self, upto: int) -> None:
        """Removes the marks of rows at or below notification id ``upto`` (the relay is past)."""
        await self.redis.zremrangebyscore(self.key, "-inf", upto)


_Row = tuple[int, Job.Event]

MARK_EVERY_S = 0.05
"""Confirmed messages are marked together, at most this long after their confirm: one Redis
round trip for all that were confirmed meanwhile (the relay waits seconds for a mark)."""


class Publisher:
    """Publishes the relayed kinds of what this process commits, in the background, confirmed,
    then marks them; register ``on_commit`` with the store and ``start()`` once the broker is
    connected. ``max_pending`` bounds the messages waiting or in flight; ``batch`` how many one
    round publishes together (up to ``rounds`` rounds in flight). Confirmed messages are marked
    in one write every ``MARK_EVERY_S`` at most."""

    def __init__(
        self,
        broker: RabbitBroker,
        routes: Routes,
        marks: RelayMarks | None,
        *,
        timeout_s: float,
        max_pending: int = 10_000,
        batch: int = 256,
        rounds: int = 64,
    ) -> None:
        self.publishers = declare_publishers(broker, routes, timeout_s)
        self.marks, self.max_pending, self.batch = marks, max_pending, batch
        self._waiting: deque[_Row] = deque()
        self._in_flight = 0
        self.rounds, self._active = rounds, 0  # rounds in flight
        self._started = False
        self._drained = asyncio.Event()  # set whenever nothing is waiting or in flight
        self._drained.set()
        self._marker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unmarked: list[tuple[int, str]] = []  # confirmed, mark not written yet
        self._marking = 0  # marks being written
        self._mark_due = asyncio.Event()

    @property
    def pending(self) -> int:
        """Messages waiting or in flight (what ``max_pending`` bounds)."""
        return len(self._waiting) + self._in_flight

    def _settle(self) -> None:
        if not self.pending and not self._unmarked and not self._marking:
            self._drained.set()

    def on_commit(self, outcomes: Sequence[Outcome]) -> None:
        """The store's commit hook: queues the committed events a service consumes (no I/O)."""
        for outcome in outcomes:
            for notification_id, event in zip(
                outcome.notification_ids, outcome.events, strict=True
            ):
                if type(event) not in KINDS:
                    continue
                if self.pending >= self.max_pending:
                    PUBLISHED_ON_COMMIT.labels("skipped").inc()
                    continue
                self._waiting.append((notification_id, event))
        if self._waiting:
            self._drained.clear()
            self._dispatch()

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._marker = asyncio.create_task(self._mark_loop(), name="jobtrail-marker")
            self._dispatch()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Lets what is queued go out for up to ``timeout_s``, then stops (the relay publishes
        whatever was left)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        self._started = False
        tasks = [t for t in (self._marker, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._marker = None

    def _dispatch(self) -> None:
        """Starts rounds for what waits, right away (no hop through another task), while fewer
        than ``rounds`` are in flight; a round that ends calls it again."""
        while self._started and self._waiting and self._active < self.rounds:
            rows = [self._waiting.popleft() for _ in range(min(self.batch, len(self._waiting)))]
            self._in_flight += len(rows)
            self._active += 1
            task = asyncio.create_task(self._round(rows))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _round(self, rows: list[_Row]) -> None:
        try:
            await self._publish(rows)
        except Exception:  # never let a round take the publisher down: the relay has them
            log.exception("publishing %d committed events failed", len(rows))
        finally:
            self._in_flight -= len(rows)
            self._active -= 1
            self._dispatch()
            self._settle()

    async def _publish(self, rows: list[_Row]) -> None:
        built: list[tuple[int, str, Outgoing]] = []
        for notification_id, event in rows:
            try:
                message = to_message(notification_id, event)
            except PoisonEventError:
                continue  # the relay quarantines it
            if message is not None:
                built.append((notification_id, mark_of(notification_id, event), message))
        results: list[BaseException | None]
        if len(built) == 1:  # the common case when idle: no gather, no extra task
            try:
                await send(self.publishers, built[0][2])
                results = [None]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(
                *(send(self.publishers, message) for _, _, message in built),
                return_exceptions=True,
            )
        confirmed = [
            (notification_id, mark)
            for (notification_id, mark, _), result in zip(built, results, strict=True)
            if result is None
        ]
        failed = len(built) - len(confirmed)
        if failed:
            PUBLISHED_ON_COMMIT.labels("failed").inc(failed)
            error = next(r for r in results if r is not None)
            log.warning(
                "%d of %d messages not confirmed (%r); the relay sends them",
                failed,
                len(built),
                error,
            )
        if not confirmed:
            return
        PUBLISHED_ON_COMMIT.labels("confirmed").inc(len(confirmed))
        if self.marks is None:
            return
        self._unmarked += confirmed
        if len(self._unmarked) > self.max_pending:  # Redis is slower than the broker: drop
            dropped = len(self._unmarked) - self.max_pending
            del self._unmarked[:dropped]
            PUBLISH_MARKS_FAILED.inc(dropped)
        self._mark_due.set()

    async def _mark_loop(self) -> None:
        while True:
            await self._mark_due.wait()
            await asyncio.sleep(MARK_EVERY_S)  # the confirms of this moment go in one write
            self._mark_due.clear()
            rows, self._unmarked = self._unmarked, []
            if not rows or self.marks is None:
                self._settle()
                continue
            self._marking = len(rows)
            try:
                await self.marks.mark(rows)
            except (RedisError, OSError) as exc:
                PUBLISH_MARKS_FAILED.inc(len(rows))
                log.warning("%d marks not written (%r); the relay sends them again", len(rows), exc)
            except Exception:  # the loop must outlive any failure: unmarked = sent twice, not lost
                PUBLISH_MARKS_FAILED.inc(len(rows))
                log.exception("%d marks not written; the relay sends them again", len(rows))
            finally:
                self._marking = 0
                self._settle()


def relay_marks(
    redis: Redis, redis_settings: RedisSettings, settings: PublishSettings, routes: Routes
) -> RelayMarks | None:
    """The marks writers and the relay of one topology share (scoped by its events exchange),
    or None when publishing on commit is off."""
    if not settings.publish_on_commit:
        return None
    return RelayMarks(
        redis,
        redis_settings.redis_prefix,
        settings.relay_marks_max,
        scope=routes.topology.events_exchange,
    )


def publish_on_commit(
    store: AsyncJobStore,
    broker: RabbitBroker,
    routes: Routes,
    bus: BusSettings,
    redis: Redis,
    redis_settings: RedisSettings,
    settings: PublishSettings | None = None,
) -> Publisher | None:
    """A writer's Publisher, registered with its store (call before the broker starts, then
    ``start()`` it once the broker has); None when JOBTRAIL_PUBLISH_ON_COMMIT is off."""
    settings = settings or PublishSettings()
    marks = relay_marks(redis, redis_settings, settings, routes)
    if marks is None:
        return None
    publisher = Publisher(
        broker,
        routes,
        marks,
        timeout_s=bus.publish_timeout_s,
        max_pending=settings.publish_max_pending,
    )
    store.on_commit(publisher.on_commit)
    return publisher
