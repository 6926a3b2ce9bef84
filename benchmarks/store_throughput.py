"""Transitions per second of the event store: one transaction per command vs group commit.

Usage: python -m benchmarks.store_throughput [--jobs 2000] [--concurrency 200]
Needs PostgreSQL (JOBTRAIL_POSTGRES_URL, default a scratch database on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime

from shared.domain import Cause, Job
from shared.eventstore import AsyncJobStore, JobStore, ensure_database
from shared.settings import StoreSettings

CAUSE = Cause(actor="bench", correlation_id="bench")


def lifecycle(job_id: uuid.UUID, step: int):  # type: ignore[no-untyped-def]
    def command(job: Job | None) -> Job:
        now = datetime.now(UTC)
        if step == 0:
            return Job.submit(CAUSE, job_type="bench", payload={"n": 1}, job_id=job_id)
        assert job is not None
        if step == 1:
            job.schedule(CAUSE, now)
        elif step == 2:
            job.start(CAUSE, worker_id="w", attempt=1, lease_s=30, now=now)
        else:
            job.complete(CAUSE, worker_id="w", attempt=1, result={"ok": True})
        return job

    return command


def sequential(store: JobStore, jobs: int) -> float:
    ids = [uuid.uuid4() for _ in range(jobs)]
    start = time.perf_counter()
    for step in range(4):
        for job_id in ids:
            store.execute(job_id, lifecycle(job_id, step))
    return jobs * 4 / (time.perf_counter() - start)


async def grouped(store: AsyncJobStore, jobs: int, concurrency: int) -> float:
    ids = [uuid.uuid4() for _ in range(jobs)]
    gate = asyncio.Semaphore(concurrency)

    async def one(job_id: uuid.UUID) -> None:
        async with gate:
            for step in range(4):
                await store.execute(job_id, lifecycle(job_id, step))

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in ids))
    return jobs * 4 / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get(
        "JOBTRAIL_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/jobtrail_bench"
    )
    ensure_database(url)
    settings = StoreSettings(postgres_url=url)
    print(
        f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
        f"python={platform.python_version()}"
    )
    seq, grp = [], []
    for _ in range(args.rounds):  # interleaved so both see the same machine noise
        store = JobStore(settings)
        seq.append(sequential(store, args.jobs // 4))
        store.close()
        async with AsyncJobStore(JobStore(settings)) as astore:
            grp.append(await grouped(astore, args.jobs, args.concurrency))
            stats = astore.store.stats
    print(
        f"one transaction per transition: median {statistics.median(seq):8.0f} transitions/s "
        f"(runs: {', '.join(f'{x:.0f}' for x in seq)})"
    )
    print(
        f"group commit (concurrency {args.concurrency}): median {statistics.median(grp):8.0f} "
        f"transitions/s (runs: {', '.join(f'{x:.0f}' for x in grp)})"
    )
    print(
        f"last group-commit run: {stats.commands} commands in {stats.batches} transactions "
        f"({stats.commands / max(stats.batches, 1):.1f} per transaction)"
    )
    print(f"ratio group/sequential: {statistics.median(grp) / statistics.median(seq):.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
