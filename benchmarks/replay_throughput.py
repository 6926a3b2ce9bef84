"""Replay speed: events per second projected into a fresh Redis generation, and the drift check.

Usage: python -m benchmarks.replay_throughput [--events 100000] [--rounds 3] [--batch 5000]
Fills a scratch database (dropped afterwards) with ~``--events`` events (jobs of 4 events each,
1,000 jobs per transaction), then measures: the live projection catching up from an empty Redis,
``jobtrail rebuild`` (rebuild into a new generation and switch), and ``find_drift`` over every job.
Needs PostgreSQL (JOBTRAIL_POSTGRES_URL names the server) and Redis (JOBTRAIL_REDIS_URL); Redis
keys live under a scratch prefix, unlinked afterwards.
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

import psycopg
from psycopg.rows import dict_row

from services.projector import replay
from services.projector.projection import Projection
from shared import generations
from shared.domain import Cause, Job
from shared.drift import find_drift
from shared.eventstore import AsyncJobStore, JobStore, checkpoints, verify
from shared.redis_view import RedisView
from shared.settings import RedisSettings, StoreSettings
from tests.services import fresh_database

CAUSE = Cause(actor="bench", correlation_id="bench")


def whole_job(job_id: uuid.UUID, n: int):  # type: ignore[no-untyped-def]
    """One command that records a job's whole life: Submitted, Scheduled, Started, Completed."""

    def command(_: Job | None) -> Job:
        now = datetime.now(UTC)
        job = Job.submit(CAUSE, job_type=f"bench.{n % 4}", payload={"n": n}, job_id=job_id)
        job.schedule(CAUSE, now)
        job.start(CAUSE, worker_id="w", attempt=1, lease_s=30, now=now)
        job.complete(CAUSE, worker_id="w", attempt=1, result={"n": n})
        return job

    return command


def fill(store: JobStore, events: int) -> float:
    jobs = max(1, events // 4)
    start = time.perf_counter()
    for first in range(0, jobs, 1000):
        batch = [(uuid.uuid4(), n) for n in range(first, min(first + 1000, jobs))]
        for outcome in store.execute_batch([(i, whole_job(i, n)) for i, n in batch]):
            outcome.unwrap()
    return store.max_notification_id() / (time.perf_counter() - start)


async def measure(store: AsyncJobStore, view: RedisView, rounds: int, batch: int) -> None:
    total = await store.run_sync(store.store.max_notification_id)
    start = time.perf_counter()
    projection = Projection(store, view, asyncio.sleep)
    while await projection.step():
        pass
    live = total / (time.perf_counter() - start)
    print(f"live projection from an empty Redis (batch 1000): {live:8.0f} events/s")
    rates = []
    for _ in range(rounds):
        done = await replay.rebuild(store, view, batch=batch)
        rates.append(done.rate)
    print(
        f"jobtrail rebuild (batch {batch}, rebuild + switch): "
        f"median {statistics.median(rates):8.0f}"
        f" events/s (runs: {', '.join(f'{r:.0f}' for r in rates)}); last dropped {done.dropped}"
        " old keys after the switch"
    )
    start = time.perf_counter()
    drift = await find_drift(store, view)
    seconds = time.perf_counter() - start
    pattern = (await view.active_space()).job_key("*")
    jobs = len([key async for key in view.redis.scan_iter(match=pattern, count=1000)])
    print(
        f"find_drift over {jobs} jobs: {seconds:.1f} s ({jobs / seconds:.0f} jobs/s), "
        f"{len(drift)} drifted"
    )


def integrity_figures(url: str) -> None:
    """Checkpointing and verifying the same log (docs/audit.md): both read every event once."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        started = time.perf_counter()
        mark = checkpoints.write_checkpoint(conn)
        seconds = time.perf_counter() - started
    assert mark is not None
    print(
        f"checkpoint of {mark.events} events: {seconds:.2f} s "
        f"({mark.events / seconds:.0f} events/s)"
    )
    started = time.perf_counter()
    report = verify.verify_log(url)
    seconds = time.perf_counter() - started
    print(
        f"verify (chains + head vs checkpoint) of {report.events} events: {seconds:.2f} s "
        f"({report.events / seconds:.0f} events/s), {len(report.problems)} problems"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    server = os.environ.get("JOBTRAIL_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/")
    redis_url = os.environ.get("JOBTRAIL_REDIS_URL", "redis://127.0.0.1:6379/0")
    print(
        f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
        f"python={platform.python_version()}"
    )
    with fresh_database(server, "bench_replay") as url:
        store = JobStore(StoreSettings(postgres_url=url))
        rate = fill(store, args.events)
        print(f"filled {store.max_notification_id()} events at {rate:.0f} events/s")
        integrity_figures(url)
        view = RedisView(
            RedisSettings(redis_url=redis_url, redis_prefix=f"jt-bench-{uuid.uuid4().hex[:6]}")
        )
        try:
            async with AsyncJobStore(store) as astore:
                await measure(astore, view, args.rounds, args.batch)
        finally:
            dropped = await generations.drop(view.redis, await view.active_space())
            for key in (generations.active_key(view.prefix), f"{view.prefix}:generations"):
                dropped += int(await view.redis.unlink(key))
            await view.aclose()
        print(f"cleaned up: {dropped} Redis keys, the scratch database")


if __name__ == "__main__":
    asyncio.run(main())
