"""A/B of the projection: this checkout against another one (main, say), rounds alternating.

Usage: python -m benchmarks.ab_projection --base DIR [--new DIR] [--rounds 3] [--jobs 2000]
       [--follow 3000] [--rate 200] [--events 40000] [--skip-load] [--skip-follow]
       [--skip-replay]

Each checkout runs its own code with its own ``.venv/bin/python``, one after the other within
each round (the order flips every round), so both see the same noise of a shared machine.
Figures, per checkout, the median over the rounds:
- projector CPU ms per job under load: the services of that checkout on scratch names
  (benchmarks.scratch), a warm-up, then ``--jobs`` no-op jobs one per request (16 in flight) and
  ``--jobs`` in batches of 100 (benchmarks.load); the projector process holds both the relay and
  the projection, so a change to either shows here;
- the projection alone (its process: the projection and the NOTIFY listener, as the projector
  runs them) following a log that this script writes at ``--rate`` jobs/s, each job in three
  commits as the services write it (Submitted and Scheduled; Started; Completed), ``--follow``
  jobs: its CPU ms per job (``time.process_time`` of that process, from before the first
  event until it has applied the last). The same writes for both checkouts, nothing else in
  that process: the steadiest figure of the projection's cost per job;
- the live projection catching up from an empty Redis (batch 1000), and ``jobtrail rebuild``
  (rebuild into a new generation, batch 5000), in events/s, over one log of ``--events`` events
  (jobs of 4 events, filled once and read by both checkouts).
Needs PostgreSQL, RabbitMQ and Redis as benchmarks.scratch does; everything is scratch and
removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.replay_throughput import fill
from benchmarks.scratch import POSTGRES, REDIS
from shared.domain import Cause, Job
from shared.eventstore import JobStore
from shared.eventstore.commands import Command, existing
from shared.settings import StoreSettings
from tests.services import fresh_database

LOAD = """
import json, sys
from benchmarks import load
from benchmarks.scratch import Scratch
jobs = int(sys.argv[1])
out = {}
with Scratch(workers=2) as system:
    system.start()
    load.throughput(system, "batch", 300)  # warm-up: imports, connections, prepared statements
    for how in ("request", "batch"):
        run = load.throughput(system, how, jobs)
        out[how] = run.cpu_ms_per_job("projector")
        out[how + " jobs/s"] = run.rate
print("RESULT " + json.dumps(out))
"""

REPLAY = """
import asyncio, json, sys, time
from services.projector import replay
from services.projector.projection import Projection
from shared import generations
from shared.eventstore import AsyncJobStore, JobStore
from shared.redis_view import RedisView
from shared.settings import RedisSettings, StoreSettings

async def main(url, redis_url, prefix):
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    try:
        async with AsyncJobStore(JobStore(StoreSettings(postgres_url=url))) as store:
            total = await store.run_sync(store.store.max_notification_id)
            start = time.perf_counter()
            projection = Projection(store, view, asyncio.sleep)
            while await projection.step():
                pass
            while await view.position() < total:  # a step may stop at a partial batch
                await projection.step()
            live = total / (time.perf_counter() - start)
            done = await replay.rebuild(store, view, batch=5000)
    finally:
        await generations.drop(view.redis, await view.active_space())
        for key in (generations.active_key(prefix), f"{prefix}:generations"):
            await view.redis.unlink(key)
        await view.aclose()
    print("RESULT " + json.dumps({"live": live, "replay": done.rate}))

asyncio.run(main(*sys.argv[1:4]))
"""


FOLLOW = """
import asyncio, json, sys, time
from services.projector.projection import Projection
from shared import generations
from shared.eventstore import AsyncJobStore, JobStore
from shared.leader import Wakeup
from shared.redis_view import RedisView
from shared.settings import RedisSettings, StoreSettings

async def main(url, redis_url, prefix):
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix))
    try:
        async with AsyncJobStore(JobStore(StoreSettings(postgres_url=url))) as store:
            wakeup = Wakeup(url, store.store.events_table)
            try:  # as the projector runs it, in a checkout that has the reader
                from services.projector.reader import LogReader
                extra = {"reader": LogReader(store.store)}
            except ImportError:
                extra = {}
            projection = Projection(store, view, wakeup.subscribe(), prune_s=0, **extra)
            tasks = [asyncio.create_task(wakeup.run()), asyncio.create_task(projection.run())]
            await asyncio.sleep(1.0)
            cpu = time.process_time()
            print("READY", flush=True)
            head = int(await asyncio.to_thread(sys.stdin.readline))
            while await view.position() < head:
                await asyncio.sleep(0.05)
            cpu = time.process_time() - cpu
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await generations.drop(view.redis, await view.active_space())
        await view.aclose()
    print("RESULT " + json.dumps({"follow": cpu}))

asyncio.run(main(*sys.argv[1:4]))
"""

CAUSE = Cause(actor="bench", correlation_id="bench")


def _new(job_id: uuid.UUID) -> Command:
    def command(_: Job | None) -> Job:
        job = Job.submit(CAUSE, job_type="noop", payload={}, job_id=job_id)
        job.schedule(CAUSE, datetime.now(UTC))
        return job

    return command


def _start(job: Job) -> None:
    job.start(CAUSE, worker_id="w", attempt=1, lease_s=30, now=datetime.now(UTC))


def _complete(job: Job) -> None:
    job.complete(CAUSE, worker_id="w", attempt=1, result=None)


def write_jobs(store: JobStore, jobs: int, rate: float) -> int:
    """Writes ``jobs`` jobs at ``rate`` a second, each in three commits a tick apart, as the
    submitter, a worker's claim and its outcome would; returns the log's head."""
    tick = 0.01
    started: list[uuid.UUID] = []
    submitted: list[uuid.UUID] = []
    made, owed, at = 0, 0.0, time.monotonic()
    while made < jobs or submitted or started:
        owed += rate * tick
        new = [uuid.uuid4() for _ in range(min(int(owed), jobs - made))]
        owed -= len(new)
        made += len(new)
        for commands in (
            [(i, existing(_complete)) for i in started],
            [(i, existing(_start)) for i in submitted],
            [(i, _new(i)) for i in new],
        ):
            for outcome in store.execute_batch(commands) if commands else []:
                outcome.unwrap()
        started, submitted = submitted, new
        at += tick
        time.sleep(max(0.0, at - time.monotonic()))
    return store.max_notification_id()


def follow(checkout: Path, jobs: int, rate: float) -> dict[str, float]:
    """The projection of ``checkout`` following a fresh log written at ``rate``: CPU ms/job."""
    with fresh_database(f"{POSTGRES}/postgres", "ab_follow") as url:
        JobStore(StoreSettings(postgres_url=url)).close()  # the schema, before the follower
        child = subprocess.Popen(  # noqa: S603 (our own checkouts' interpreters)
            [
                str(checkout / ".venv/bin/python"),
                "-c",
                FOLLOW,
                url,
                REDIS,
                f"ab-{uuid.uuid4().hex[:8]}",
            ],
            cwd=checkout,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert child.stdin is not None and child.stdout is not None
        if child.stdout.readline().strip() != "READY":
            raise RuntimeError(f"{checkout}: follower did not start\n{child.communicate()[1]}")
        store = JobStore(StoreSettings(postgres_url=url, postgres_pool_size=2))
        try:
            head = write_jobs(store, jobs, rate)
        finally:
            store.close()
        out, err = child.communicate(f"{head}\n", timeout=600)
    return {"follow": 1000 * _result(checkout, out, err)["follow"] / jobs}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}


def _result(checkout: Path, out: str, err: str) -> dict[str, float]:
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"{checkout}: no result\n{out[-2000:]}\n{err[-4000:]}")


def run(checkout: Path, code: str, *args: str) -> dict[str, float]:
    """Runs ``code`` with the checkout's interpreter and code; returns its RESULT line."""
    done = subprocess.run(  # noqa: S603 (our own checkouts' interpreters)
        [str(checkout / ".venv/bin/python"), "-c", code, *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
        env=_env(),
    )
    return _result(checkout, done.stdout, done.stderr)


def report(name: str, unit: str, figures: dict[str, list[float]]) -> None:
    base, new = (statistics.median(figures[side]) for side in ("base", "new"))
    runs = {side: ", ".join(f"{v:.2f}" for v in figures[side]) for side in ("base", "new")}
    print(
        f"{name:<40} base {base:10.2f} new {new:10.2f} {unit:<12} new/base {new / base:5.2f}"
        f"   (base: {runs['base']}; new: {runs['new']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--follow", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-follow", action="store_true")
    parser.add_argument("--skip-replay", action="store_true")
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "new": args.new.resolve()}
    for side, checkout in sides.items():
        print(f"{side}: {checkout} at {_commit(checkout)}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    figures: dict[str, dict[str, list[float]]] = {}

    def add(side: str, found: dict[str, float]) -> None:
        for name, value in found.items():
            figures.setdefault(name, {"base": [], "new": []})[side].append(value)

    with fresh_database(f"{POSTGRES}/postgres", "ab_projection") as url:
        if not args.skip_replay:
            store = JobStore(StoreSettings(postgres_url=url))
            fill(store, args.events)
            events = store.max_notification_id()
            store.close()
            print(f"log for the replay figures: {events} events", flush=True)
        for n in range(args.rounds):
            order = ["base", "new"] if n % 2 == 0 else ["new", "base"]
            for side in order:
                if not args.skip_follow:
                    add(side, follow(sides[side], args.follow, args.rate))
                if not args.skip_load:
                    add(side, run(sides[side], LOAD, str(args.jobs)))
                if not args.skip_replay:
                    prefix = f"ab-{uuid.uuid4().hex[:8]}"
                    add(side, run(sides[side], REPLAY, url, REDIS, prefix))
                print(f"round {n + 1}: {side} done", flush=True)
    print()
    names = {
        "follow": (f"projection alone at {args.rate:.0f} jobs/s", "CPU ms/job"),
        "request": ("projector CPU, one job per request", "ms/job"),
        "batch": ("projector CPU, batches of 100", "ms/job"),
        "request jobs/s": ("end to end, one job per request", "jobs/s"),
        "batch jobs/s": ("end to end, batches of 100", "jobs/s"),
        "live": ("live projection from empty Redis", "events/s"),
        "replay": ("jobtrail rebuild (rebuild, batch 5000)", "events/s"),
    }
    for key, (name, unit) in names.items():
        if key in figures:
            report(name, unit, figures[key])
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _commit(checkout: Path) -> str:
    done = subprocess.run(  # noqa: S603
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
