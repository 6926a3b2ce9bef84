"""Poison events in the log: the relay and the projection record them, count them, mark their
job, and go on past them. Real PostgreSQL, RabbitMQ and Redis, in process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.projector.projection import Projection
from services.projector.reader import LogReader
from services.projector.relay import POSITION, Relay
from shared import quarantine
from shared.domain import Cause, Job, Status
from shared.drift import expected_view
from shared.eventstore import AsyncJobStore, JobStore, existing
from shared.messaging import Routes, declare_topology, make_broker
from shared.redis_view import RedisView
from shared.redis_writes import Applied
from shared.settings import BusSettings, RedisSettings, StoreSettings
from tests.jobs import CAUSE, NO_JITTER, fail, insert_row, unchecked_cause
from tests.services import delete_topology, fresh_database


async def no_wait(_: float) -> None:
    await asyncio.sleep(0.01)


@pytest.fixture
async def store(postgres_server: str) -> AsyncIterator[AsyncJobStore]:
    with fresh_database(postgres_server, "quarantine") as url:
        async with AsyncJobStore(JobStore(StoreSettings(postgres_url=url))) as job_store:
            yield job_store


def quarantined(stage: str) -> float:
    return REGISTRY.get_sample_value("jobtrail_quarantined_total", {"stage": stage}) or 0.0


async def write(
    store: AsyncJobStore, submitted: Cause, scheduled: Cause | None = CAUSE
) -> uuid.UUID:
    """A job submitted (and scheduled) with these causes, written through the store."""
    job_id = uuid.uuid4()

    def create(_: Job | None) -> Job:
        job = Job.submit(submitted, job_type="t", payload={}, job_id=job_id)
        if scheduled is not None:
            job.schedule(scheduled, datetime.now(UTC))
        return job

    await store.execute(job_id, create)
    return job_id


async def until(check: Callable[[], Any], what: str, seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_relay_quarantines_poison_events_fails_their_jobs_and_goes_on(
    store: AsyncJobStore, amqp_url: str
) -> None:
    # Given a log where jobs with causes the bus cannot carry sit among normal jobs
    bus = BusSettings(amqp_url=amqp_url, topology_prefix=f"jt-quar-{uuid.uuid4().hex[:6]}")
    routes = Routes.from_settings(bus)
    broker = make_broker(bus)
    relay = Relay(store, broker, routes, no_wait, publish_timeout_s=5, actor="test/relay")
    counted = quarantined("relay")
    await broker.connect()
    try:
        await declare_topology(broker, routes, queues=["default"])
        await broker.start()
        first = await write(store, CAUSE)
        pending = await write(store, CAUSE)  # then a poison AttemptFailed: PENDING, see below
        await store.execute(pending, existing(_started))
        await store.execute(pending, existing(_attempt_failed))
        scheduled = await write(store, CAUSE, unchecked_cause(correlation_id="é" * 128))
        moved_on = await write(store, CAUSE, unchecked_cause(causation_id="r" * 5000))
        await store.execute(moved_on, existing(_started))  # RUNNING: past its poison event
        last = await write(store, CAUSE)
        head = await store.run_sync(store.store.max_notification_id)

        # When the relay runs
        task = asyncio.create_task(relay.run())
        await until(lambda: _at(store, head), "the relay to pass every event")

        # Then the jobs standing at a poison event are FAILED, saying why ...
        for job_id in (pending, scheduled):
            history = await store.history(job_id)
            assert isinstance(history[-1], Job.Quarantined)
            job = await store.get(job_id)
            assert job.status is Status.FAILED and job.error is not None
            assert job.error["type"] == "Quarantined"
            assert any(f in job.error["message"] for f in ("causation_id", "correlation id"))
        # ... a job that had moved past its poison event is left alone ...
        assert (await store.get(moved_on)).status is Status.RUNNING
        # ... each is recorded once and counted, and the normal jobs behind were relayed
        rows = await store.run_sync(quarantine.recorded, store.store, None, 10)
        assert {(r["job_id"], r["action"]) for r in rows} == {
            (pending, "job_failed"),
            (scheduled, "job_failed"),
            (moved_on, "job_moved_on"),
        }
        assert quarantined("relay") - counted == 3
        work = await (await broker.declare_queue(routes.work("default"))).declare()
        assert work.message_count == 3  # first, pending's first Scheduled, last

        # And a relay that starts again from the beginning records and counts nothing twice
        task.cancel()
        await store.set_position(POSITION, 0)
        task = asyncio.create_task(relay.run())
        await until(lambda: _at(store, head), "the relay to pass every event again")
        task.cancel()
        assert len(await store.run_sync(quarantine.recorded, store.store, None, 10)) == 3
        assert quarantined("relay") - counted == 3
        assert {first, last}.isdisjoint(r["job_id"] for r in rows)
    finally:
        await asyncio.to_thread(delete_topology, amqp_url, routes.topology.prefix)
        await broker.stop()


async def _at(store: AsyncJobStore, head: int) -> bool:
    return await store.position(POSITION) >= head


@pytest.mark.parametrize("own_connection", [False, True], ids=["pool", "reader"])
async def test_the_projection_quarantines_what_it_cannot_apply_and_goes_on(
    store: AsyncJobStore, redis_url: str, own_connection: bool
) -> None:
    # Given a row that does not decode between normal jobs, and a job Redis cannot take
    prefix = f"jt-quar-{uuid.uuid4().hex[:6]}"
    view = BrokenFor(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    reader = LogReader(store.store) if own_connection else None
    projection = Projection(store, view, no_wait, reader=reader)
    counted = quarantined("projection")
    before = [await write(store, CAUSE) for _ in range(3)]
    damaged = uuid.uuid4()
    await store.run_sync(_insert_undecodable, store.store, damaged)
    view.broken = await write(store, CAUSE)
    after = [await write(store, CAUSE) for _ in range(3)]

    try:
        # When the projection catches up
        while await projection.step():
            pass

        # Then both are recorded and counted, the broken job's hash is gone (reads use the log),
        # and every other job is projected as the log says
        rows = await store.run_sync(quarantine.recorded, store.store, None, 10)
        assert {(r["job_id"], r["version"], r["stage"], r["action"]) for r in rows} == {
            (damaged, 1, "projection", "hash_deleted"),
            (view.broken, 1, "projection", "hash_deleted"),
            (view.broken, 2, "projection", "hash_deleted"),
        }
        assert quarantined("projection") - counted == 3
        assert await view.get(view.broken) is None
        for job in await store.get_many(before + after):
            assert await view.get(job.id) == expected_view(job)
        assert await view.position() == await store.run_sync(store.store.max_notification_id)
    finally:
        keys = [k async for k in view.redis.scan_iter(f"{prefix}:*")]
        if keys:
            await view.redis.delete(*keys)
        await view.aclose()
        if reader is not None:
            await reader.aclose()


class BrokenFor(RedisView):
    """A view that cannot apply the events of one job (as a value Redis refused would)."""

    broken: uuid.UUID | None = None

    async def apply_events(self, events: Any, **options: Any) -> Applied:
        if any(e.originator_id == self.broken for e in events):
            raise ValueError("cannot be applied")
        return await super().apply_events(events, **options)

    async def current(self) -> RedisView:
        return self

    async def locate(self) -> tuple[RedisView, int]:
        return self, await self.position()


def _insert_undecodable(store: JobStore, job_id: uuid.UUID) -> None:
    """A Submitted row whose state is not JSON, written around the store."""
    insert_row(store, job_id, "shared.domain.job:Job.Submitted", b"{not json")


async def _dump(view: RedisView, prefix: str, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every key of a projection (prefix stripped) with its content."""
    found: dict[str, Any] = {}
    async for key in view.redis.scan_iter(f"{prefix}:*"):
        kind = await view.redis.type(key)
        name = key[len(prefix) :]
        if name in ignore:
            continue
        if kind == "hash":
            fields = await view.redis.hgetall(key)
            if name == ":counts":  # a counter at 0 is one that was never counted
                fields = {f: v for f, v in fields.items() if v != "0"}
            found[name] = fields
        elif kind == "zset":
            found[name] = await view.redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            found[name] = await view.redis.smembers(key)
        else:
            found[name] = await view.redis.get(key)
    return found


async def test_a_forgotten_job_is_counted_and_indexed_as_in_a_clean_projection_after_refold(
    store: AsyncJobStore, redis_url: str
) -> None:
    # Given a projection of two SCHEDULED jobs, that cannot apply the Started event of one
    prefix, clean_prefix = (f"jt-fgt-{uuid.uuid4().hex[:6]}" for _ in range(2))
    view = BrokenFor(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    clean = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=clean_prefix))
    projection = Projection(store, view, no_wait)
    poisoned, other = await write(store, CAUSE), await write(store, CAUSE)
    try:
        while await projection.step():
            pass
        assert (await view.get(poisoned) or {})["status"] == "SCHEDULED"

        # When its Started event is quarantined (the hash is forgotten) and it then completes
        view.broken = poisoned
        started = await store.execute(poisoned, existing(_started))
        while await projection.step():
            pass
        assert await view.get(poisoned) is None
        view.broken = None
        await store.execute(poisoned, existing(_completed))
        while await projection.step():
            pass

        # Then its next event refolds it, and the counters and indexes are those of a clean
        # projection of the same log (no SCHEDULED left counted, no stale index entry)
        clean_projection = Projection(store, clean, no_wait)
        while await clean_projection.step():
            pass
        assert started.status is Status.RUNNING
        assert (await view.get(poisoned) or {})["status"] == "COMPLETED"
        assert await _dump(view, prefix) == await _dump(clean, clean_prefix)
        counts = await view.redis.hgetall(f"{prefix}:counts")
        assert counts["status:SCHEDULED"] == "1" and counts["status:COMPLETED"] == "1", counts
        assert other
    finally:
        for name in (prefix, clean_prefix):
            keys = [k async for k in view.redis.scan_iter(f"{name}:*")]
            if keys:
                await view.redis.delete(*keys)
        await clean.aclose()
        await view.aclose()


def _started(job: Job) -> Job:
    job.start(CAUSE, worker_id="W", attempt=1, lease_s=30.0, now=datetime.now(UTC))
    return job


def _attempt_failed(job: Job) -> Job:
    job.fail_attempt(
        unchecked_cause(causation_id="r" * 129),
        worker_id="W",
        attempt=1,
        error_type="E",
        error_message="boom",
        retryable=True,
        now=datetime.now(UTC),
        backoff=NO_JITTER,
    )
    return job


def _completed(job: Job) -> Job:
    job.complete(CAUSE, worker_id="W", attempt=1, result={"ok": True})
    return job


async def test_a_forgotten_failed_job_that_is_requeued_is_not_uncounted_twice(
    store: AsyncJobStore, redis_url: str
) -> None:
    # Given a projection that cannot apply a job's Failed event (its hash is forgotten)
    prefix, clean_prefix = (f"jt-fgr-{uuid.uuid4().hex[:6]}" for _ in range(2))
    view = BrokenFor(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    clean = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=clean_prefix))
    projection = Projection(store, view, no_wait)
    job_id = await write(store, CAUSE)
    try:
        await store.execute(job_id, existing(_started))
        while await projection.step():
            pass
        view.broken = job_id
        await store.execute(job_id, existing(_failed))
        while await projection.step():
            pass
        assert await view.get(job_id) is None
        # When an operator requeues it (a Requeued event refolds the job, assuming FAILED)
        view.broken = None
        requeue = Cause("test:operator", "c-rq", reason="fixed")
        await store.execute(job_id, existing(lambda job: _requeued(job, requeue)))
        while await projection.step():
            pass
        # Then the counters and indexes are those of a clean projection of the same log
        clean_projection = Projection(store, clean, no_wait)
        while await clean_projection.step():
            pass
        assert (await view.get(job_id) or {})["status"] == "PENDING"
        # (a clean projection also lists FAILED|t|id as expiring, until PRUNE drops it since
        # the hash is back: the forgotten job never had that entry)
        ignore = (":expiring",)
        assert await _dump(view, prefix, ignore) == await _dump(clean, clean_prefix, ignore)
    finally:
        for name in (prefix, clean_prefix):
            keys = [k async for k in view.redis.scan_iter(f"{name}:*")]
            if keys:
                await view.redis.delete(*keys)
        await clean.aclose()
        await view.aclose()


def _failed(job: Job) -> Job:
    return fail(
        job, worker_id="W", retryable=False, error_message="no retry", now=datetime.now(UTC)
    )


def _requeued(job: Job, cause: Cause) -> Job:
    job.requeue(cause)
    return job


async def test_a_poison_event_that_ended_its_job_is_recorded_as_job_final(
    store: AsyncJobStore,
) -> None:
    # Given a job on its last attempt that a LeaseExpired with no retry ended FAILED
    job_id = uuid.uuid4()

    def run_and_lose(_: Job | None) -> Job:
        job = Job.submit(CAUSE, job_type="t", payload={}, max_attempts=1, job_id=job_id)
        job.schedule(CAUSE, datetime.now(UTC))
        _started(job)
        job.expire_lease(CAUSE, attempt=1, now=datetime.now(UTC), backoff=NO_JITTER)
        return job

    job = await store.execute(job_id, run_and_lose)
    assert job.status is Status.FAILED
    assert isinstance((await store.history(job_id))[-1], Job.LeaseExpired)

    def poison(version: int) -> quarantine.Poison:
        return quarantine.Poison("relay", 1, job_id, version, "LeaseExpired", "poison")

    # When that event is quarantined, then the action says the job is final, not moved on
    assert await quarantine.fail_job(store, poison(job.version), "test") == "job_final"
    # And an event the job has moved past is still told apart
    assert await quarantine.fail_job(store, poison(job.version - 1), "test") == "job_moved_on"
    assert (await store.get(job_id)).version == job.version  # nothing recorded
