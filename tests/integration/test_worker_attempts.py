"""A worker tracks what it runs by (job, attempt): two attempts of one job on one worker do not
mix. Real PostgreSQL; the handlers are plain asyncio tasks standing in for running jobs."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.worker.handlers import heartbeat
from services.worker.state import Running, WorkerState
from shared.domain import Job
from shared.eventstore import AsyncJobStore, JobStore, existing
from shared.jobtypes import JobContext, registry
from shared.settings import StoreSettings
from tests.jobs import CAUSE, NO_JITTER

LEASE_S = 30.0


@pytest.fixture
async def aio(store_settings: StoreSettings) -> AsyncIterator[AsyncJobStore]:
    async with AsyncJobStore(JobStore(store_settings)) as store:
        yield store


async def _scheduled(aio: AsyncJobStore) -> uuid.UUID:
    job_id = uuid.uuid4()
    await aio.execute(job_id, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id))
    await aio.execute(job_id, existing(lambda j: j.schedule(CAUSE)))
    return job_id


async def _start(aio: AsyncJobStore, job_id: uuid.UUID, attempt: int) -> None:
    await aio.execute(
        job_id,
        existing(
            lambda j: j.start(
                CAUSE, worker_id="W", attempt=attempt, lease_s=LEASE_S, now=datetime.now(UTC)
            )
        ),
    )


async def _take_away_and_restart(aio: AsyncJobStore, job_id: uuid.UUID) -> None:
    """The scheduler expires attempt 1's lease and attempt 2 is claimed by the same worker."""
    await aio.execute(
        job_id,
        existing(
            lambda j: j.expire_lease(CAUSE, attempt=1, now=datetime.now(UTC), backoff=NO_JITTER)
        ),
    )
    await aio.execute(job_id, existing(lambda j: j.schedule(CAUSE)))
    await _start(aio, job_id, 2)


def _running(job_id: uuid.UUID, attempt: int) -> Running:
    running = Running(job_id, attempt, JobContext(job_id, attempt, "W"))
    running.task = asyncio.create_task(asyncio.sleep(60))
    return running


async def _settled(*tasks: asyncio.Task[None] | None) -> None:
    for task in tasks:
        assert task is not None
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 0.1)


async def _lease_left_s(aio: AsyncJobStore, job_id: uuid.UUID) -> float:
    def read(store: JobStore) -> float:
        with store.recorder.datastore.get_connection() as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM expires_at - now())::float AS left_s, attempt "
                "FROM jobtrail_leases WHERE job_id = %s",
                [job_id],
            ).fetchone()
        assert row is not None and row["attempt"] == 2
        return float(row["left_s"])

    return await aio.run_sync(read, aio.store)


def _state() -> WorkerState:
    return WorkerState("W", lease_s=LEASE_S, backoff=NO_JITTER, registry=registry)


async def test_a_new_attempt_of_a_job_stops_the_stale_one_and_keeps_its_own_entry(
    aio: AsyncJobStore,
) -> None:
    # Given attempt 1 of a job running on W
    state = _state()
    job_id = await _scheduled(aio)
    await _start(aio, job_id, 1)
    first = _running(job_id, 1)
    state.add(first)
    # When its lease is taken away while it still runs, and attempt 2 lands on W as well
    await _take_away_and_restart(aio, job_id)
    second = _running(job_id, 2)
    state.add(second)
    # Then attempt 1 is stopped (its outcome would be refused) and attempt 2 runs on
    await _settled(first.task)
    assert first.lease_lost and first.task is not None and first.task.cancelled()
    assert not second.lease_lost and second.task is not None and not second.task.done()
    # And when attempt 1 cleans up, attempt 2 stays registered, so its lease is still renewed
    state.remove(first)
    assert state.running == {(job_id, 2): second}
    await heartbeat(aio, state)
    assert not second.lease_lost and await _lease_left_s(aio, job_id) > LEASE_S - 5
    second.task.cancel()


async def test_the_heartbeat_renews_each_attempt_on_its_own_and_stops_the_stale_one(
    aio: AsyncJobStore,
) -> None:
    # Given W runs attempt 1 (whose lease was taken away) and attempt 2 of the same job
    state = _state()
    job_id = await _scheduled(aio)
    await _start(aio, job_id, 1)
    await _take_away_and_restart(aio, job_id)
    first, second = _running(job_id, 1), _running(job_id, 2)
    state.running = {first.key: first, second.key: second}
    # When the heartbeat runs
    await heartbeat(aio, state)
    # Then attempt 1 learns it has no lease and is stopped; attempt 2's lease is renewed
    await _settled(first.task)
    assert first.lease_lost and first.task is not None and first.task.cancelled()
    assert not second.lease_lost
    assert second.task is not None and not second.task.done()
    second.task.cancel()
