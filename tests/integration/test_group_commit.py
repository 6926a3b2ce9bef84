"""The async facade coalesces concurrent commands into few transactions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from shared.domain import Job, JobError
from shared.eventstore import AsyncJobStore, JobStore
from shared.settings import StoreSettings
from tests.jobs import CAUSE


async def test_concurrent_commands_share_transactions(store_settings: StoreSettings) -> None:
    # Given 300 submissions issued at once
    async with AsyncJobStore(JobStore(store_settings)) as store:
        ids = [uuid.uuid4() for _ in range(300)]

        async def submit(job_id: uuid.UUID) -> Job:
            return await store.execute(
                job_id, lambda _: Job.submit(CAUSE, job_type="t", payload={"i": 1}, job_id=job_id)
            )

        # When they complete
        jobs = await asyncio.gather(*(submit(i) for i in ids))

        # Then every job is committed, in far fewer transactions than commands
        assert {j.id for j in jobs} == set(ids)
        stats = store.store.stats
        assert stats.commands == 300 and stats.events == 300
        assert stats.batches < 100
        assert len(await store.history(ids[0])) == 1


async def test_contested_claims_in_one_batch_have_one_winner(store_settings: StoreSettings) -> None:
    # Given a scheduled job and 40 claims for it arriving together
    async with AsyncJobStore(JobStore(store_settings)) as store:
        job_id = uuid.uuid4()

        def create(_: Job | None) -> Job:
            job = Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id)
            job.schedule(CAUSE, datetime.now(UTC))
            return job

        await store.execute(job_id, create)

        async def claim(worker: str) -> str | None:
            def start(job: Job | None) -> Job:
                assert job is not None
                job.start(CAUSE, worker_id=worker, attempt=1, lease_s=30, now=datetime.now(UTC))
                return job

            try:
                await store.execute(job_id, start)
            except JobError:
                return None
            return worker

        winners = [w for w in await asyncio.gather(*(claim(f"w{i}") for i in range(40))) if w]

        # Then exactly one claim won and the log has one Started
        assert len(winners) == 1
        history = await store.history(job_id)
        assert [type(e).__name__ for e in history] == ["Submitted", "Scheduled", "Started"]
