"""Writers publish what they commit; the relay is the backstop (shared/publishing.py,
services/projector/relay.py). Real PostgreSQL, RabbitMQ and Redis, in process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.projector.relay import POSITION, Relay
from shared.domain import Job
from shared.eventstore import AsyncJobStore, JobStore, Outcome
from shared.messaging import Routes, declare_topology, make_broker
from shared.publishing import RelayMarks, mark_of, publish_on_commit
from shared.settings import BusSettings, RedisSettings, StoreSettings
from tests.integration.test_store_history import CommitThenDrop
from tests.jobs import CAUSE
from tests.processes import free_port
from tests.services import delete_topology, fresh_database


async def no_wait(_: float) -> None:
    await asyncio.sleep(0.01)


@pytest.fixture
async def store(postgres_server: str) -> AsyncIterator[AsyncJobStore]:
    """A log of its own: the relay here follows every event in it."""
    with fresh_database(postgres_server, "publish") as url:
        async with AsyncJobStore(JobStore(StoreSettings(postgres_url=url))) as job_store:
            yield job_store


class Bus:
    """A topology and a Redis prefix of the test's own, with the work queue ``default``."""

    def __init__(self, amqp_url: str, redis_url: str) -> None:
        tag = uuid.uuid4().hex[:6]
        self.amqp_url = amqp_url
        self.settings = BusSettings(amqp_url=amqp_url, topology_prefix=f"jt-pub-{tag}")
        self.routes = Routes.from_settings(self.settings)
        self.broker = make_broker(self.settings)
        self.redis_settings = RedisSettings(redis_url=redis_url, redis_prefix=f"jt-pub-{tag}")
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.marks = RelayMarks(
            self.redis,
            self.redis_settings.redis_prefix,
            1000,
            scope=self.routes.topology.events_exchange,
        )

    async def start(self) -> None:
        await self.broker.connect()
        await declare_topology(self.broker, self.routes, queues=["default"])
        await self.broker.start()

    async def work_messages(self) -> list[dict[str, Any]]:
        """Takes every message waiting in the work queue; their bodies."""
        queue = await self.broker.declare_queue(self.routes.work("default"))
        bodies = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(json.loads(message.body))
        return bodies

    async def work_count(self) -> int:
        queue = await self.broker.declare_queue(self.routes.work("default"))
        declared = await queue.declare()
        return int(declared.message_count or 0)

    async def close(self) -> None:
        await asyncio.to_thread(delete_topology, self.amqp_url, self.routes.topology.prefix)
        await self.broker.stop()
        await self.redis.delete(self.marks.key)
        await self.redis.aclose()


@pytest.fixture
async def bus(amqp_url: str, redis_url: str) -> AsyncIterator[Bus]:
    made = Bus(amqp_url, redis_url)
    try:
        yield made
    finally:
        await made.close()


def dispatched(job_id: uuid.UUID) -> Callable[[Job | None], Job]:
    """Submits a job due at once: Submitted and Scheduled in one command."""

    def create(_: Job | None) -> Job:
        job = Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id)
        job.dispatch_if_due(CAUSE)
        return job

    return create


async def scheduled_rows(store: AsyncJobStore) -> dict[tuple[uuid.UUID, int], int]:
    """(job, version) -> notification id of every Scheduled event, read from the log."""
    rows = await store.events_after(0, 1000, [Job.Scheduled])
    MARKS.update({e.originator_id: mark_of(n, e) for n, e in rows})
    return {(e.originator_id, e.originator_version): n for n, e in rows}


MARKS: dict[uuid.UUID, str] = {}  # job -> the mark of its Scheduled row, as scheduled_rows read


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def relayed(action: str) -> float:
    return REGISTRY.get_sample_value("jobtrail_relay_messages_total", {"action": action}) or 0.0


async def test_a_writer_publishes_what_it_commits_and_marks_it_without_the_relay(
    store: AsyncJobStore, bus: Bus
) -> None:
    # Given a writer whose store publishes on commit, and no relay running
    publisher = publish_on_commit(
        store, bus.broker, bus.routes, bus.settings, bus.redis, bus.redis_settings
    )
    assert publisher is not None
    await bus.start()
    publisher.start()
    try:
        # When jobs are committed alone (group commit) and several in one transaction
        alone = uuid.uuid4()
        together = [uuid.uuid4() for _ in range(3)]
        await store.execute(alone, dispatched(alone))
        await store.execute_many([(j, dispatched(j)) for j in together])

        # Then each Scheduled event is marked as published, by its own row of the log ...
        rows = await scheduled_rows(store)
        assert {job for job, _ in rows} == {alone, *together}
        marks = {MARKS[job] for job, _ in rows}

        async def all_marked() -> bool:
            return await bus.marks.marked(list(marks)) == marks

        await until(all_marked, "the writer to mark every Scheduled event")
        # ... and its message waits in the work queue, naming that same row, once
        bodies = await bus.work_messages()
        assert sorted(
            (uuid.UUID(b["data"]["job_id"]), b["data"]["version"], b["data"]["notification_id"])
            for b in bodies
        ) == sorted((job, version, n) for (job, version), n in rows.items())
        assert await store.position(POSITION) == 0  # no relay took part
    finally:
        await publisher.aclose()


@pytest.mark.parametrize("commit_first", [True, False], ids=["committed", "rolled-back"])
async def test_after_a_lost_commit_answer_the_hook_gets_the_committed_rows_ids(
    postgres_server: str, commit_first: bool
) -> None:
    # Given a store whose COMMIT answer is lost once (the COMMIT took effect, or did not and the
    # batch is written again, with other notification ids)
    with fresh_database(postgres_server, "publish-commit") as url:
        inner = CommitThenDrop(StoreSettings(postgres_url=url), commit_first=commit_first)
        async with AsyncJobStore(inner) as store:
            seen: list[Outcome] = []
            store.on_commit(seen.extend)
            warm = uuid.uuid4()
            await store.execute(warm, dispatched(warm))  # the sequence moves on
            inner.tripped = False

            # When jobs are committed through it
            ids = [uuid.uuid4() for _ in range(3)]
            await store.execute_many([(j, dispatched(j)) for j in ids])

            # Then the hook saw each event once, with the id of its row in the log
            assert inner.stats.unknown_commits == 1
            log = {
                (e.originator_id, e.originator_version): n
                for n, e in await store.events_after(0, 100)
            }
            hooked = {
                (e.originator_id, e.originator_version): n
                for o in seen
                for n, e in zip(o.notification_ids, o.events, strict=True)
            }
            assert hooked == log
            assert sum(len(o.events) for o in seen) == len(log) == 8


async def test_the_relay_skips_marked_events_and_publishes_unmarked_ones_after_the_grace(
    store: AsyncJobStore, bus: Bus
) -> None:
    # Given two dispatched jobs, one marked as published by its writer, one not
    marked, unmarked = uuid.uuid4(), uuid.uuid4()
    for job_id in (marked, unmarked):
        await store.execute(job_id, dispatched(job_id))
    rows = await scheduled_rows(store)
    await bus.marks.mark([(rows[(marked, 2)], mark_of_row(rows, marked))])
    head = await store.run_sync(store.store.max_notification_id)
    await bus.start()
    counts = relayed("published"), relayed("skipped")

    # When the relay runs with a short grace
    relay = Relay(
        store, bus.broker, bus.routes, no_wait, marks=bus.marks, grace_s=0.3, check_s=0.05
    )
    task = asyncio.create_task(relay.run())
    try:

        async def passed() -> bool:
            return await store.position(POSITION) >= head

        await until(passed, "the relay to pass both events")
    finally:
        task.cancel()

    # Then only the unmarked one was published, and the mark it skipped is gone
    bodies = await bus.work_messages()
    assert [uuid.UUID(b["data"]["job_id"]) for b in bodies] == [unmarked]
    assert await bus.marks.marked([mark_of_row(rows, marked)]) == set()
    assert (relayed("published") - counts[0], relayed("skipped") - counts[1]) == (1, 1)


async def test_the_relay_waits_the_grace_for_an_unmarked_event(
    store: AsyncJobStore, bus: Bus
) -> None:
    # Given a job whose writer has not marked its Scheduled event (yet)
    job_id = uuid.uuid4()
    await store.execute(job_id, dispatched(job_id))
    rows = await scheduled_rows(store)
    head = await store.run_sync(store.store.max_notification_id)
    await bus.start()

    # When the relay runs with a long grace
    relay = Relay(
        store, bus.broker, bus.routes, no_wait, marks=bus.marks, grace_s=600, check_s=0.05
    )
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(1.0)
        # Then it publishes nothing and does not pass the event ...
        assert await bus.work_count() == 0
        assert await store.position(POSITION) < rows[(job_id, 2)]

        # ... until the writer's mark arrives: then it skips it
        await bus.marks.mark([(rows[(job_id, 2)], mark_of_row(rows, job_id))])

        async def passed() -> bool:
            return await store.position(POSITION) >= head

        await until(passed, "the relay to pass the marked event")
    finally:
        task.cancel()
    assert await bus.work_count() == 0


async def test_with_redis_away_the_relay_publishes_everything(
    store: AsyncJobStore, bus: Bus
) -> None:
    # Given marks in a Redis that does not answer (nothing listens on that port)
    ids = [uuid.uuid4() for _ in range(3)]
    for job_id in ids:
        await store.execute(job_id, dispatched(job_id))
    head = await store.run_sync(store.store.max_notification_id)
    away = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    marks = RelayMarks(away, "jt-away", 1000)
    await bus.start()

    # When the relay runs
    relay = Relay(store, bus.broker, bus.routes, no_wait, marks=marks, grace_s=0.2, check_s=0.05)
    task = asyncio.create_task(relay.run())
    try:

        async def passed() -> bool:
            return await store.position(POSITION) >= head

        await until(passed, "the relay to pass every event")
    finally:
        task.cancel()
        await away.aclose()

    # Then every message was published: a duplicate is harmless, a loss is not
    bodies = await bus.work_messages()
    assert sorted(uuid.UUID(b["data"]["job_id"]) for b in bodies) == sorted(ids)


def mark_of_row(rows: dict[tuple[uuid.UUID, int], int], job_id: uuid.UUID) -> str:
    """The mark of a job's Scheduled event (version 2)."""
    assert (job_id, 2) in rows
    return MARKS[job_id]
