"""`jobtrail rebuild` and drift detection, in process, against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from services.projector import replay
from services.projector.projection import Projection
from services.submitter.handlers import read_job
from shared import generations
from shared.domain import Job, Status
from shared.drift import expected_view, find_drift
from shared.eventstore import AsyncJobStore, JobStore
from shared.generations import KeySpace, Switch
from shared.redis_view import RedisView
from shared.redis_writes import GenerationMovedError
from shared.settings import RedisSettings, StoreSettings
from tests.jobs import CAUSE, NO_JITTER
from tests.services import fresh_database

OPERATOR = dataclasses.replace(CAUSE, reason="operator requeue")
Step = Callable[[Job | None], Job]


@pytest.fixture
async def store(postgres_server: str) -> AsyncIterator[AsyncJobStore]:
    """A log of its own, so a replay reads only this test's events."""
    with fresh_database(postgres_server, "replay") as url:
        async with AsyncJobStore(JobStore(StoreSettings(postgres_url=url))) as job_store:
            yield job_store


@pytest.fixture
async def view(redis_url: str) -> AsyncIterator[RedisView]:
    """A view under a prefix of its own; every key under it is deleted afterwards."""
    prefix = f"jt-replay-{uuid.uuid4().hex[:8]}"
    redis_view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    yield redis_view
    keys = [k async for k in redis_view.redis.scan_iter(f"{prefix}:*")]
    if keys:
        await redis_view.redis.unlink(*keys)
    await redis_view.aclose()


def plan(kind: int, job_id: uuid.UUID) -> list[Step]:
    """The commands that bring a job to one of seven outcomes, one event (or two) per command."""
    now = datetime.now(UTC)

    def on(change: Callable[[Job], None]) -> Step:
        def command(job: Job | None) -> Job:
            assert job is not None
            change(job)
            return job

        return command

    def submit(job: Job | None) -> Job:
        created = Job.submit(
            CAUSE, job_type=f"t{kind % 2}", payload={"k": kind}, max_attempts=2, job_id=job_id
        )
        created.schedule(CAUSE, now)
        return created

    def start(attempt: int) -> Step:
        return on(lambda j: j.start(CAUSE, worker_id="w", attempt=attempt, lease_s=30, now=now))

    def fail(attempt: int, retryable: bool) -> Step:
        return on(
            lambda j: j.fail_attempt(
                CAUSE,
                worker_id="w",
                attempt=attempt,
                error_type="E",
                error_message="boom",
                retryable=retryable,
                now=now,
                backoff=NO_JITTER,
            )
        )

    complete = on(lambda j: j.complete(CAUSE, worker_id="w", attempt=j.attempt, result={"n": 1}))
    cancel = on(lambda j: j.request_cancel(CAUSE))
    return [
        [submit, start(1), complete],  # COMPLETED
        [
            submit,
            start(1),
            fail(1, True),
            on(lambda j: j.schedule(CAUSE, now + timedelta(hours=1))),
            start(2),
            complete,
        ],
        [submit, start(1), fail(1, False)],  # FAILED
        [submit, start(1), fail(1, False), on(lambda j: j.requeue(OPERATOR))],  # refolded
        [submit, cancel],  # CANCELLED while scheduled
        [submit, start(1), cancel],  # RUNNING, cancel requested
        [submit],  # SCHEDULED
    ][kind % 7]


async def workload(store: AsyncJobStore, jobs: int) -> list[uuid.UUID]:
    """Jobs with varied outcomes, their commands interleaved in the log."""
    ids: list[uuid.UUID] = []

    async def one(kind: int) -> None:
        job_id = uuid.uuid4()
        ids.append(job_id)
        for step in plan(kind, job_id):
            await store.execute(job_id, step)

    await asyncio.gather(*(one(kind) for kind in range(jobs)))
    return ids


async def catch_up(store: AsyncJobStore, view: RedisView) -> None:
    projection = Projection(store, view, asyncio.sleep)
    while await projection.step():
        pass


async def snapshot(view: RedisView, space: KeySpace, ids: list[uuid.UUID]) -> dict[str, object]:
    pinned = view.pinned(space)
    return {
        "jobs": dict(zip(ids, await pinned.get_many(ids), strict=True)),
        "counts": await pinned.counts(),
        "page": await pinned.page(limit=len(ids)),
    }


async def test_a_replay_equals_the_fold_of_every_job_and_the_live_projection(
    store: AsyncJobStore, view: RedisView
) -> None:
    # Given a mixed workload projected live into the base generation
    ids = await workload(store, 70)
    await catch_up(store, view)
    old = await view.active_space()
    before = await snapshot(view, old, ids)

    # When the log is replayed into a new generation
    done = await replay.rebuild(store, view, batch=100)

    # Then readers use the new generation, which equals the live projection and every fold
    new = await view.active_space()
    assert (done.old, done.new) == (old, new)
    assert new != old
    assert await snapshot(view, new, ids) == before
    for job in await store.get_many(ids):
        assert await view.get(job.id) == expected_view(job)
    statuses = {str(job.status) for job in await store.get_many(ids)}
    assert statuses == {"COMPLETED", "FAILED", "PENDING", "CANCELLED", "RUNNING", "SCHEDULED"}
    assert await find_drift(store, view) == []
    assert done.events == await store.run_sync(store.store.max_notification_id)
    # And the old generation is gone
    leftovers = [k for p in old.patterns() async for k in view.redis.scan_iter(match=p)]
    assert leftovers == []
    assert done.dropped > len(ids)


async def test_reads_and_new_events_carry_on_across_a_replay(
    store: AsyncJobStore, view: RedisView
) -> None:
    # Given projected jobs, the live projection running, and a writer adding jobs all along
    ids = await workload(store, 140)
    await catch_up(store, view)
    before = {i: await view.get(i) for i in ids}
    live = asyncio.create_task(Projection(store, view, asyncio.sleep, batch=50).run())
    written: list[uuid.UUID] = []
    writing = asyncio.Event()
    writing.set()

    async def writer() -> None:
        kind = 0
        while writing.is_set():
            written.extend(await workload(store, 3 + kind % 4))
            kind += 1

    reads: list[dict[str, str] | None] = []
    replaying = True

    async def reader() -> None:
        while replaying:
            for job_id in ids[::7]:
                reads.append(await view.get(job_id))
            await asyncio.sleep(0)

    writing_task, reading_task = asyncio.create_task(writer()), asyncio.create_task(reader())

    # When the log is replayed in small batches, so reads and writes interleave with it
    done = await replay.rebuild(store, view, batch=50)
    right_after = await (await view.current()).get_many(ids)  # one round trip, before the live
    replaying = False  # projection could fill in what the replay left out
    await reading_task
    during = len(written)
    written.extend(await workload(store, 14))  # and more jobs after the switch
    writing.clear()
    await writing_task

    # Then every read found the job as it was, from the old and then the new generation
    assert len(reads) >= len(ids[::7])
    assert [r for r in reads if r is None] == []
    assert all(r == before[uuid.UUID(r["id"])] for r in reads if r is not None)
    assert right_after == [before[i] for i in ids]
    # And once the live projection has caught up, nothing is missing or different
    head = await store.run_sync(store.store.max_notification_id)
    for _ in range(300):
        if await view.position() >= head:
            break
        await asyncio.sleep(0.05)
    live.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await live  # no write of it may land after the fixture deletes the keys
    assert during > 0
    assert (await view.active_space()) == done.new
    assert await find_drift(store, view, settle_s=0) == []
    for job in await store.get_many(written):
        assert await view.get(job.id) == expected_view(job)


async def test_drift_is_found_and_a_single_job_replay_repairs_it(
    store: AsyncJobStore, view: RedisView
) -> None:
    # Given a clean projection (no drift)
    ids = await workload(store, 14)
    await catch_up(store, view)
    assert await find_drift(store, view) == []

    # When Redis is damaged: a field changed, a hash lost, a hash the log does not know
    changed, lost, stranger = ids[0], ids[1], uuid.uuid4()
    space = await view.active_space()
    await view.redis.hset(space.job_key(changed), "status", "FAILED")
    await view.redis.hset(space.job_key(changed), "attempt", "9")
    await view.redis.delete(space.job_key(lost))
    await view.redis.hset(space.job_key(stranger), mapping={"id": str(stranger), "status": "X"})

    # Then each is reported with what differs
    drift = {d.job_id: d for d in await find_drift(store, view, settle_s=0)}
    assert set(drift) == {changed, lost, stranger}
    assert drift[changed].kind == "differs"
    assert set(drift[changed].fields) == {"status", "attempt"}
    assert drift[changed].fields["attempt"][0] == "9"
    assert drift[lost].kind == "missing"
    assert drift[stranger].kind == "unknown"
    assert await find_drift(store, view, [changed], settle_s=0) == [drift[changed]]

    # And replaying those jobs repairs them (the stranger has no events to replay)
    refolded = await replay.refold(store, view, [changed, lost, stranger])
    assert {job.id for job in refolded} == {changed, lost}
    remaining = await find_drift(store, view, settle_s=0)
    assert [(d.job_id, d.kind) for d in remaining] == [(stranger, "unknown")]


async def test_a_time_range_replay_refolds_only_jobs_with_events_in_it(
    store: AsyncJobStore, view: RedisView
) -> None:
    # Given jobs from before a moment and jobs from after it, both drifted in Redis
    early = await workload(store, 7)
    middle = datetime.now(UTC)
    late = await workload(store, 7)
    await catch_up(store, view)
    space = await view.active_space()
    for job_id in (early[0], late[0]):
        await view.redis.hset(space.job_key(job_id), "queue", "wrong")

    # When the jobs with events since that moment are replayed
    found = await replay.jobs_between(store, middle, None)
    await replay.refold(store, view, found)

    # Then exactly the later jobs were chosen, and only their drift is repaired
    assert set(found) == set(late)
    assert [d.job_id for d in await find_drift(store, view, settle_s=0)] == [early[0]]
    assert set(await replay.jobs_between(store, None, middle)) == set(early)


async def test_an_expired_final_job_is_read_from_the_log_and_not_brought_back_by_a_replay(
    store: AsyncJobStore, redis_url: str, view: RedisView
) -> None:
    # Given final jobs leave Redis one second after their final event
    short = RedisView(view.settings.model_copy(update={"final_ttl_s": 1}), view.redis, guarded=True)
    jobs = {job.status: job.id for job in await store.get_many(await workload(store, 7))}
    done_id, scheduled_id = jobs[Status.COMPLETED], jobs[Status.SCHEDULED]
    await catch_up(store, short)
    assert await short.get(done_id) is not None
    assert 0 < await view.redis.pttl(short.job_key(done_id)) <= 1000

    # When the TTL has run out
    for _ in range(100):
        if await short.get(done_id) is None:
            break
        await asyncio.sleep(0.05)

    # Then the status is read from the log, and the drift check does not call it missing
    job = await read_job(store, short, done_id)
    assert (job["status"], job["source"]) == ("COMPLETED", "log")
    assert await find_drift(store, short, settle_s=0) == []
    # And pruning takes it out of the list indexes (not out of the counters): an index no longer
    # keeps an id per job forever; a job that is not final keeps its entries
    space, counts = await short.active_space(), await short.counts()
    done_type = (await store.get_many([done_id]))[0].job_type
    indexes = [space.index_key(), space.index_key("type", done_type)]
    indexes.append(space.index_key("status", "COMPLETED"))
    assert all([await view.redis.zscore(key, str(done_id)) for key in indexes])
    assert await short.prune() >= 1
    assert [await view.redis.zscore(key, str(done_id)) for key in indexes] == [None] * 3
    assert await view.redis.zscore(space.index_key(), str(scheduled_id)) is not None
    assert await short.counts() == counts
    assert await short.prune() == 0
    # And a replay does not bring it back, though it still counts it, like the live projection
    counts = await short.counts()
    await replay.rebuild(store, short)
    assert await short.get(done_id) is None
    assert await short.get(scheduled_id) is not None
    assert await short.counts() == counts


async def test_a_switch_from_a_generation_that_is_no_longer_active_is_refused(
    store: AsyncJobStore, view: RedisView
) -> None:
    # Given two replays that both started from the base generation
    await workload(store, 7)
    await catch_up(store, view)
    base = await view.active_space()
    first = await generations.new_generation(view.redis, view.prefix)
    second = await generations.new_generation(view.redis, view.prefix)
    for space in (first, second):
        await catch_up(store, view.pinned(space, guarded=False))

    # When both try to switch
    outcomes = [await generations.switch(view.redis, base, s) for s in (first, second)]

    # Then only the first wins; a generation behind the active one is refused as well
    assert outcomes == [Switch.SWITCHED, Switch.MOVED]
    third = await generations.new_generation(view.redis, view.prefix)
    assert await generations.switch(view.redis, first, third) is Switch.BEHIND
    assert await view.active_space() == first


async def test_a_write_to_a_generation_that_is_no_longer_active_is_refused(
    store: AsyncJobStore, view: RedisView
) -> None:
    # Given the live projection pinned to the base generation, and a replay that switched away
    ids = await workload(store, 7)
    base = await view.active_space()
    stale = view.pinned(base)
    new = await generations.new_generation(view.redis, view.prefix)
    assert await generations.switch(view.redis, base, new) is Switch.SWITCHED
    events = [event for _, event in await store.events_after(0, 1000)]

    # When the stale view writes (a step that raced the switch)
    with pytest.raises(GenerationMovedError):
        await stale.apply_events(events)
    with pytest.raises(GenerationMovedError):
        await stale.put_jobs(await store.get_many(ids))
    with pytest.raises(GenerationMovedError):
        await stale.set_position(len(events))

    # Then nothing reached the old generation, and a following projection writes the new one
    assert [k for p in base.patterns() async for k in view.redis.scan_iter(match=p)] == []
    await catch_up(store, view)
    assert await view.pinned(new).position() == len(events)
    assert await find_drift(store, view, settle_s=0) == []
