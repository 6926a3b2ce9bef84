"""Range export of the log: events per second and the exporting process's peak memory.

Fills a scratch database with ``--events`` events (jobs of 4 events, written in big batches),
then runs ``jobtrail audit --since ... --output /dev/null`` over the first tenth of the events
and over all of them, as child processes, and prints each one's wall time and peak RSS. Memory
that does not grow with the number of events exported is what the streaming is for.

Usage: python -m benchmarks.audit_export [--events 200000] [--format jsonl|csv]
Needs PostgreSQL (JOBTRAIL_POSTGRES_URL, default a scratch database on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import datetime

from benchmarks.store_throughput import lifecycle
from shared.eventstore import JobStore, ensure_database
from shared.settings import StoreSettings


def fill(store: JobStore, events: int, batch: int = 500) -> None:
    """Writes jobs of 4 events each (submitted .. completed) until the log holds ``events``."""
    missing = events - store.max_notification_id()
    ids = [uuid.uuid4() for _ in range(max(0, missing) // 4)]
    for step in range(4):
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            store.execute_batch([(job_id, lifecycle(job_id, step)) for job_id in chunk])


def filled_log(events: int, database: str) -> tuple[JobStore, str]:
    """A store on ``JOBTRAIL_POSTGRES_URL`` (else the local database ``database``) whose log
    holds ``events`` events or more, and its URL; prints the machine and the fill."""
    url = os.environ.get(
        "JOBTRAIL_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:5432/{database}"
    )
    ensure_database(url)
    store = JobStore(StoreSettings(postgres_url=url))
    print(
        f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
        f"python={platform.python_version()}"
    )
    started = time.perf_counter()
    fill(store, events)
    took = time.perf_counter() - started
    print(f"log: {store.max_notification_id()} events (filled in {took:.1f} s)")
    return store, url


def export(url: str, since: datetime, until: datetime | None, fmt: str) -> tuple[float, float]:
    """Runs the CLI export as a child; returns (seconds, peak RSS in MiB) of that child."""
    args = ["--since", since.isoformat(), "--format", fmt, "--output", os.devnull]
    if until is not None:
        args += ["--until", until.isoformat()]
    env = os.environ | {"JOBTRAIL_POSTGRES_URL": url}
    started = time.perf_counter()
    child = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "services.cli", "audit", *args], env=env
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"export failed with status {status}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--format", default="jsonl", choices=["jsonl", "csv"])
    args = parser.parse_args()
    store, url = filled_log(args.events, "jobtrail_bench_audit")
    total = store.max_notification_id()
    first = store.events_after(0, 1)[0][1].timestamp
    tenth = store.events_after(total // 10, 1)[0][1].timestamp
    store.close()
    for label, until, count in (("first tenth", tenth, total // 10), ("all", None, total)):
        seconds, rss = export(url, first, until, args.format)
        print(
            f"export {label:<11} ~{count:>8} events as {args.format}: {seconds:6.1f} s, "
            f"{count / seconds:8.0f} events/s, peak RSS {rss:6.1f} MiB"
        )


if __name__ == "__main__":
    main()
