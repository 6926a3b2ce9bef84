"""What the dashboard's overview costs the log: the time of its throughput query.

Fills a scratch database with ``--events`` events (jobs of 4 events, all written now, so every
event the query reads falls in its 15-minute window: the worst case), then runs the query the
overview runs (``services.submitter.ui.figures.throughput``, which reads at most the newest
``SCAN_EVENTS`` notifications) ``--rounds`` times and prints the median and the worst, and the
time of one job's chain verification (``GET /v1/jobs/{id}/verify``). A submitter runs the query
at most once per ``CACHE_S`` seconds, whatever the number of dashboards.

Usage: python -m benchmarks.overview [--events 100000] [--rounds 7]
Needs PostgreSQL (JOBTRAIL_POSTGRES_URL, default a scratch database on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from benchmarks.audit_export import filled_log
from services.submitter.ui import figures
from services.submitter.ui.verify import verify_job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    store, _ = filled_log(args.events, "jobtrail_bench_overview")
    head = store.max_notification_id()
    timings, found = [], {}
    for _ in range(args.rounds):
        began = time.perf_counter()
        found = figures.throughput(store, datetime.now(UTC))
        timings.append(time.perf_counter() - began)
    counted = sum(
        sum(minute.values()) for tenant in found["tenants"].values() for minute in tenant.values()
    )
    print(
        f"overview throughput query: median {statistics.median(timings) * 1000:.0f} ms, "
        f"worst {max(timings) * 1000:.0f} ms over {args.rounds} rounds "
        f"({min(head, figures.SCAN_EVENTS)} notifications read at most, {counted} final events "
        f"and failed attempts counted, partial={found['partial']})"
    )
    job_id = store.events_after(head - 1, 1)[0][1].originator_id
    began = time.perf_counter()
    report = verify_job(store, job_id)
    print(
        f"one job's chain verification: {(time.perf_counter() - began) * 1000:.1f} ms "
        f"({report['events']} events, ok={report['ok']})"
    )
    store.close()


if __name__ == "__main__":
    main()
