"""The relay and the Redis projection, in process, against real RabbitMQ, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from redis.asyncio import Redis

from services.projector.projection import Projection
from services.projector.reader import LogReader
from services.projector.relay import POSITION, Relay
from shared.domain import Job
from shared.drift import expected_view
from shared.eventstore import AsyncJobStore, JobStore
from shared.messaging import Routes, declare_topology, make_broker
from shared.redis_view import RedisView
from shared.redis_writes import Applied, PositionMovedError
from shared.settings import BusSettings, RedisSettings, StoreSettings
from tests.jobs import CAUSE
from tests.services import delete_topology, fresh_database


async def no_wait(_: float) -> None:
    await asyncio.sleep(0.01)


@pytest.fixture
async def store(postgres_server: str) -> AsyncIterator[AsyncJobStore]:
    """A log of its own: the relay and projection here follow every event in it."""
    with fresh_database(postgres_server, "projector") as url:
        async with AsyncJobStore(JobStore(StoreSettings(postgres_url=url))) as job_store:
            yield job_store


async def submit(store: AsyncJobStore, n: int, queue: str = "default") -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    for job_id in ids:

        def create(_: Job | None, job_id: uuid.UUID = job_id) -> Job:
            job = Job.submit(CAUSE, job_type="t", payload={}, queue=queue, job_id=job_id)
            job.schedule(CAUSE, datetime.now(UTC))
            return job

        await store.execute(job_id, create)
    return ids


async def test_an_unroutable_event_stops_the_relay_until_it_can_be_routed(
    store: AsyncJobStore, amqp_url: str
) -> None:
    # Given a fresh topology without the work queue that a scheduled event routes to
    bus = BusSettings(amqp_url=amqp_url, topology_prefix=f"jt-relay-{uuid.uuid4().hex[:6]}")
    routes = Routes.from_settings(bus)
    broker = make_broker(bus)
    relay = Relay(store, broker, routes, no_wait, publish_timeout_s=5)
    await broker.connect()
    try:
        await declare_topology(broker, routes, queues=[])
        await broker.start()
        start = await store.position(POSITION)
        await submit(store, 3, queue="cpu")

        # When the relay runs, RabbitMQ returns the scheduled events as unroutable
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(1.5)

        # Then it has not advanced past them and says so; nothing was confirmed away
        assert relay.failures >= 1
        assert await store.position(POSITION) == start

        # And once the binding exists, it republishes and advances
        await declare_topology(broker, routes, queues=["cpu"])
        for _ in range(100):
            if await store.position(POSITION) > start:
                break
            await asyncio.sleep(0.1)
        assert await store.position(POSITION) > start
        task.cancel()
        queue = await (await broker.declare_queue(routes.work("cpu"))).declare()
        assert queue.message_count == 3
    finally:
        await _delete(amqp_url, routes)
        await broker.stop()


@pytest.mark.parametrize("own_connection", [False, True], ids=["pool", "reader"])
async def test_projection_equals_the_log_and_rebuilds_after_a_flush(
    store: AsyncJobStore, redis_url: str, own_connection: bool
) -> None:
    # Given jobs in the log and an empty Redis key space
    prefix = f"jt-proj-{uuid.uuid4().hex[:6]}"
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    reader = LogReader(store.store) if own_connection else None
    projection = Projection(store, view, no_wait, reader=reader)
    ids = await submit(store, 20)

    async def catch_up() -> None:
        while await projection.step():
            pass

    # When the projection catches up
    await catch_up()

    # Then every hash equals the job folded from its events
    for job in await store.get_many(ids):
        assert await view.get(job.id) == expected_view(job)

    # And after Redis loses everything (position included), it rebuilds to the same state
    client: Redis = view.redis
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    await client.delete(*keys)
    await catch_up()
    for job in await store.get_many(ids):
        assert await view.get(job.id) == expected_view(job)
    everything = {e.originator_id for _, e in await store.events_after(0, 100_000)}
    statuses = [str(job.status) for job in await store.get_many(sorted(everything))]
    counts = await view.counts()
    assert {s: counts.get(f"status:{s}", 0) for s in set(statuses)} == {
        s: statuses.count(s) for s in set(statuses)
    }

    # And a single evicted hash is refolded from the log on the job's next event
    victim = ids[0]
    await client.delete(view.job_key(victim))

    def cancel(job: Job | None) -> Job:
        assert job is not None
        job.request_cancel(CAUSE)
        return job

    await store.execute(victim, cancel)
    await catch_up()
    (job,) = await store.get_many([victim])
    assert await view.get(victim) == expected_view(job)
    await _drop(view, prefix)
    if reader is not None:
        await reader.aclose()


async def test_the_log_reader_reads_on_after_its_connection_was_cut(store: AsyncJobStore) -> None:
    # Given the projection's reader, which has read the log on its connection
    await submit(store, 3)
    reader = LogReader(store.store)
    try:
        first = await reader.events_after(0, 100, [])
        assert reader._conn is not None
        backend = reader._conn.info.backend_pid

        # When the server ends that connection (a restart, an idle timeout)
        async with await psycopg.AsyncConnection.connect(
            store.store.settings.postgres_url, autocommit=True
        ) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", [backend])

        # Then the next read opens a new one and reads the same events
        again = await reader.events_after(0, 100, [])
        assert [(n, e.originator_id, e.originator_version) for n, e in again] == [
            (n, e.originator_id, e.originator_version) for n, e in first
        ]
        assert reader._conn is not None and reader._conn.info.backend_pid != backend
    finally:
        await reader.aclose()


def whole_life(job_id: uuid.UUID) -> Job:
    """Submitted, Scheduled, Started and Completed, in one transaction (so in one batch)."""
    now = datetime.now(UTC)
    job = Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id)
    job.schedule(CAUSE, now)
    job.start(CAUSE, worker_id="w", attempt=1, lease_s=30, now=now)
    job.complete(CAUSE, worker_id="w", attempt=1, result={"ok": True})
    return job


async def test_one_batch_applies_each_jobs_versions_in_order_and_ignores_repeats_and_stale_ones(
    store: AsyncJobStore, redis_url: str
) -> None:
    # Given a job's whole life and another job's first two events, in the log
    prefix = f"jt-batch-{uuid.uuid4().hex[:6]}"
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    done, waiting = uuid.uuid4(), uuid.uuid4()
    await store.execute(done, lambda _: whole_life(done))
    (waiting,) = await submit(store, 1)
    d1, d2, d3, d4 = await store.history(done)
    w1, w2 = await store.history(waiting)
    try:
        # When one call applies them with repeats and with older versions after newer ones
        batch = [d1, d2, d2, w1, d3, d1, w2, d4, d3, w1, d2, d4]
        applied = await view.apply_events(batch, position=99)

        # Then each hash is its job's last version, counted once, and the position is saved
        # with the events (nothing needed a refold)
        jobs = {job.id: job for job in await store.get_many([done, waiting])}
        assert await view.get(done) == expected_view(jobs[done])
        assert await view.get(waiting) == expected_view(jobs[waiting])
        counts = {k: v for k, v in (await view.counts()).items() if v}
        assert counts == {
            "status:COMPLETED": 1,
            "status:SCHEDULED": 1,
            "type:t:COMPLETED": 1,
            "type:t:SCHEDULED": 1,
            "tenant:default:COMPLETED": 1,
            "tenant:default:SCHEDULED": 1,
        }
        assert applied == (Applied({}, True))
        assert await view.position() == 99

        # And a step that reads the same events again (its position moved back) changes nothing
        before = await _keys(view, prefix)
        await view.set_position(0)
        projection = Projection(store, view, no_wait)
        while await projection.step():
            pass
        assert await _keys(view, prefix) == before | {
            f"{prefix}:projection:position": str(
                await store.run_sync(store.store.max_notification_id)
            )
        }
    finally:
        await _drop(view, prefix)


async def test_the_position_waits_for_the_refold_of_a_job_whose_hash_is_gone(
    store: AsyncJobStore, redis_url: str
) -> None:
    # Given a projected job whose hash was evicted, then a new event of it
    prefix = f"jt-pos-{uuid.uuid4().hex[:6]}"
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    (job_id,) = await submit(store, 1)
    first, second = await store.history(job_id)
    try:
        await view.apply_events([first, second], position=2)
        await view.redis.delete(view.job_key(job_id))

        def cancel(job: Job | None) -> Job:
            assert job is not None
            job.request_cancel(CAUSE)
            return job

        await store.execute(job_id, cancel)
        *_, third = await store.history(job_id)

        # When the event is applied with the position it brings the projection to
        applied = await view.apply_events([third], position=3)

        # Then the job must be refolded from the log, and the position is not saved before it
        # is (a crash now must not leave the job out of Redis for good)
        assert applied == Applied({job_id: ""}, False)
        assert await view.position() == 2
        assert await view.get(job_id) is None
    finally:
        await _drop(view, prefix)


async def test_a_busy_step_starts_over_when_redis_lost_the_position_it_follows(
    store: AsyncJobStore, redis_url: str
) -> None:
    # Given a projection that has caught up (it keeps its position between steps)
    prefix = f"jt-lost-{uuid.uuid4().hex[:6]}"
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    projection = Projection(store, view, no_wait)
    ids = await submit(store, 5)
    try:
        while await projection.step():
            pass

        # When Redis loses everything and, before the next step, a new job is written
        await _flush(view, prefix)
        ids += await submit(store, 1)
        while await projection.step():
            pass

        # Then the projection started over from the log: every job is there, counted once
        for job in await store.get_many(ids):
            assert await view.get(job.id) == expected_view(job)
        assert (await view.counts())["status:SCHEDULED"] == len(ids)
    finally:
        await _drop(view, prefix)


async def _flush(view: RedisView, prefix: str) -> None:
    """Deletes every key of the test's projection (what a FLUSHDB does to it)."""
    await view.redis.delete(*[k async for k in view.redis.scan_iter(f"{prefix}:*")])


async def _drop(view: RedisView, prefix: str) -> None:
    """Deletes every key of the test's projection, then closes the view."""
    await _flush(view, prefix)
    await view.aclose()


async def _keys(view: RedisView, prefix: str) -> dict[str, object]:
    """Every key of a projection with its content."""
    found: dict[str, object] = {}
    async for key in view.redis.scan_iter(f"{prefix}:*"):
        kind = await view.redis.type(key)
        if kind == "hash":
            found[key] = await view.redis.hgetall(key)
        elif kind == "zset":
            found[key] = await view.redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            found[key] = await view.redis.smembers(key)
        else:
            found[key] = await view.redis.get(key)
    return found


async def _delete(amqp_url: str, routes: Routes) -> None:
    await asyncio.to_thread(delete_topology, amqp_url, routes.topology.prefix)


async def test_a_position_saved_after_a_refold_is_not_written_over_a_flushed_redis(
    redis_url: str,
) -> None:
    # Given a projection's position at 7 (a step that read from 7 is about to save 12)
    prefix = f"jt-setpos-{uuid.uuid4().hex[:6]}"
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    try:
        await view.set_position(7)

        # When Redis is flushed before the save (or another projection moved the position)
        await _flush(view, prefix)

        # Then the save refuses (the rebuild from 0 must not be skipped), and writes nothing
        with pytest.raises(PositionMovedError):
            await view.set_position(12, after=7)
        assert await view.position() == 0

        # And a save that follows the stored position goes through
        await view.set_position(12, after=0)
        assert await view.position() == 12
    finally:
        await _drop(view, prefix)


async def test_a_position_past_the_log_head_starts_a_fresh_generation(
    store: AsyncJobStore, redis_url: str
) -> None:
    # Given a Redis prefix that holds another log's projection (a database restored from an
    # older backup, or another database): its position is far past this log's head, and it
    # holds a hash of a job this log does not know
    prefix = f"jt-proj-{uuid.uuid4().hex[:6]}"
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    stranger = uuid.uuid4()
    await view.redis.hset(view.job_key(stranger), mapping={"status": "RUNNING", "version": "9"})
    await view.set_position(1_000_000)
    ids = await submit(store, 5)
    projection = Projection(store, view, no_wait)

    # When the projection runs until it is idle
    for _ in range(20):
        if not await projection.step():
            break

    # Then it projected this log from its start into a fresh generation, and the other log's
    # hashes are gone
    assert projection.restarts == 1
    for job in await store.get_many(ids):
        assert await view.get(job.id) == expected_view(job)
    assert await view.get(stranger) is None
    head = await store.run_sync(store.store.max_notification_id)
    assert await view.position() == head
    await _drop(view, prefix)


async def test_an_archive_of_the_newest_histories_is_not_taken_for_another_log(
    store: AsyncJobStore, redis_url: str
) -> None:
    # Given a projection at the head of a log whose every history then leaves the table, as
    # `jobtrail archive` does when all are final and old (the newest rows go too)
    prefix = f"jt-proj-{uuid.uuid4().hex[:6]}"
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    ids = await submit(store, 3)
    projection = Projection(store, view, no_wait)
    while await projection.step():
        pass
    at = await view.position()
    with store.store.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL jobtrail.maintenance = 'on'")
        conn.execute(f"DELETE FROM {store.store.events_table}")  # the test log of its own
    assert await store.run_sync(store.store.max_notification_id) < at

    # When it runs on, idle
    projection._ahead_check_at = 0.0  # check at once
    assert not await projection.step()

    # Then its position is not past the head the log's sequence issued: nothing restarted
    assert projection.restarts == 0 and await view.position() == at
    assert await view.get(ids[0]) is not None
    await _drop(view, prefix)
