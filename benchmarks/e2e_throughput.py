"""End-to-end jobs per second: the four services as processes, jobs submitted over HTTP.

Usage: python -m benchmarks.e2e_throughput [--jobs 2000] [--workers 2] [--rounds 2]
Runs with group commit on (the default) and off (JOBTRAIL_STORE_MAX_BATCH=1), interleaved, on a
scratch database and prefix, and prints medians. Needs PostgreSQL, RabbitMQ and Redis.

``--curve 1,2,4`` instead runs the default configuration with each number of worker processes
(one projector, scheduler and submitter each), the counts interleaved round after round, and
prints jobs/s against worker processes (docs/deployment.md) with the machine's load average
before and after: on a shared machine the figures are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from services.cli.supervisor import Supervisor
from shared import keys
from shared.eventstore import ensure_database
from tests.services import delete_topology

SERVER = os.environ.get("JOBTRAIL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def run_once(jobs: int, workers: int, extra_env: dict[str, str]) -> tuple[float, float]:
    """Returns (submit seconds, seconds until every job completed)."""
    tag = uuid.uuid4().hex[:8]
    db = f"jobtrail_bench_{tag}"
    port = 18000 + int(tag[:3], 16) % 1000
    url = f"{SERVER}/{db}"
    ensure_database(url)
    auth = {"Authorization": f"Bearer {keys.issue(url, name='benchmark')}"}
    env = (
        dict(os.environ)
        | extra_env
        | {
            "JOBTRAIL_POSTGRES_URL": url,
            "JOBTRAIL_TOPOLOGY_PREFIX": f"bench-{tag}",
            "JOBTRAIL_REDIS_PREFIX": f"bench-{tag}",
            "JOBTRAIL_SUBMITTER_PORT": str(port),
            "JOBTRAIL_LOG_LEVEL": "WARNING",
            "JOBTRAIL_JOB_MODULES": "examples.jobs",  # cpu.hash; production loads none
        }
    )
    supervisor = Supervisor(workers=workers, env=env, log_dir=Path(tempfile.mkdtemp()))
    supervisor.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=auth) as http:
            while True:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            body = [{"type": "cpu.hash", "payload": {"text": "x"}, "queue": "default"}] * 100
            start = time.perf_counter()
            for _ in range(jobs // 100):
                assert http.post("/v1/jobs/batch", json={"jobs": body}).status_code == 202
            submitted = time.perf_counter() - start
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                (done,) = conn.execute(
                    "SELECT count(*) FROM jobtrail_events WHERE topic LIKE '%Completed'"
                ).fetchone()  # type: ignore[misc]
                if done >= jobs:
                    break
                time.sleep(0.1)
        return submitted, time.perf_counter() - start
    finally:
        supervisor.stop()
        delete_topology(env.get("JOBTRAIL_AMQP_URL", AMQP), f"bench-{tag}")
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def curve(jobs: int, counts: list[int], rounds: int) -> None:
    """Jobs/s end to end against the number of worker processes."""
    rates: dict[int, list[float]] = {n: [] for n in counts}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for round_ in range(rounds):
        for n in counts:
            _, total = run_once(jobs, n, {})
            rates[n].append(jobs / total)
            print(f"  round {round_ + 1}, {n} worker(s): {jobs / total:.0f} jobs/s ({total:.2f} s)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| worker processes | jobs/s (median) | rounds |")
    print("|---|---|---|")
    for n in counts:
        each = ", ".join(f"{r:.0f}" for r in rates[n])
        print(f"| {n} | {statistics.median(rates[n]):.0f} | {each} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--curve",
        default="",
        help="worker process counts, e.g. 1,2,4: jobs/s at each (default configuration)",
    )
    args = parser.parse_args()
    workers = f"{args.curve} workers" if args.curve else f"{args.workers} workers"
    print(
        f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
        f"python={platform.python_version()}; {args.jobs} cpu.hash jobs, {workers}"
    )
    if args.curve:
        curve(args.jobs, [int(n) for n in args.curve.split(",")], args.rounds)
        return
    modes = {
        "group commit (default)": {},
        "no group commit (STORE_MAX_BATCH=1)": {"JOBTRAIL_STORE_MAX_BATCH": "1"},
    }
    results: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, env in modes.items():
            submitted, total = run_once(args.jobs, args.workers, env)
            results[name].append(args.jobs / total)
            print(
                f"  {name}: submitted in {submitted:.2f} s, all completed in {total:.2f} s "
                f"-> {args.jobs / total:.0f} jobs/s"
            )
    for name, rates in results.items():
        print(f"{name}: median {statistics.median(rates):.0f} jobs/s end to end")


if __name__ == "__main__":
    main()
