"""jobtrail side by side with Celery and Dramatiq, on the same machine, in one run.

Usage: python -m benchmarks.compare [--quick] [--rss-100k] [--jobs 5000] [--rates 50,100,200]
           [--seconds 15] [--workers 2] [--rivals celery,dramatiq | none]
           [--anchors DIR] [--rival-python PATH]
(`make bench-compare`; `make bench-compare ARGS=--quick`.)

jobtrail's four services run as processes (two workers, default settings, log level WARNING) on
a scratch database, topology prefix, Redis prefix and port, all deleted at the end, on failure
and on Ctrl-C too. The rivals run from their own harness (../shared/anchors, see
benchmarks/rivals.py), interleaved with jobtrail's workloads:
  throughput of no-op jobs, first send -> last completion: Celery; jobtrail by (a) the batch
  endpoint, (b) one job per request with 16 in flight, (c) SubmitJob messages; Dramatiq;
  latency, send -> completion, at each offered rate for --seconds: Celery, then jobtrail;
  CPU ms per job per process group (from /proc) in each throughput run;
  peak RSS of each service after >= 10,000 jobs, and after 100,000 with --rss-100k.
Defaults should take about 5 minutes on a 2-core machine, 10-11 with --rss-100k (80,000 more
jobs), judging by --quick's rates; --quick (300 jobs, 3 s windows) takes 1-2 minutes and only
checks that it works. It prints figures and asserts nothing; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType

from benchmarks import load
from benchmarks.procstat import peak_rss_mib
from benchmarks.report import HOW, Results, machine, rows, table
from benchmarks.rivals import DEFAULT_PYTHON, Rivals, SetupError, find_anchors
from benchmarks.scratch import Scratch


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def run_rival(rivals: Rivals | None, results: Results, name: str, script: str, *args: str) -> None:
    if rivals is None or name not in rivals.wanted:
        return
    log(f"{name}: {script} {' '.join(args)}")
    try:
        for line in rivals.run(script, *args):
            results.rival[f"{name}/{line['variant'].split('/')[0]}"] = line
    except Exception as exc:
        results.notes.append(f"{name} run failed ({script} {' '.join(args)}): {exc}")
        log(f"{name} failed: {exc}")


def rss_reading(system: Scratch, results: Results) -> None:
    results.rss.append(
        (results.jobs, {name: peak_rss_mib(pid) for pid, name in system.pids().items()})
    )


def measure(args: argparse.Namespace, rivals: Rivals | None, system: Scratch) -> Results:
    results = Results()
    n = args.jobs
    system.start()
    log(f"jobtrail up on {system.base_url} (database {system.database}, prefix {system.prefix})")
    for how in HOW:  # warm-up: connections, imports, caches on every path
        load.throughput(system, how, args.warmup)
        results.jobs += args.warmup
    celery = ["--pool", "prefork", "--concurrency", "2", "--acks-late", "1", "--n", str(n)]
    lat = ["--rate", str(args.rates[0]), "--lat-seconds", str(args.seconds)]
    run_rival(rivals, results, "celery", "celery_bench.py", *celery, *lat)
    for how in HOW:
        log(f"jobtrail: throughput, {HOW[how]}, {n} jobs")
        measured = results.throughput[how] = load.throughput(system, how, n)
        results.jobs += measured.jobs
        if measured.refused:
            results.notes.append(f"jobtrail, {HOW[how]}: {measured.refused} jobs refused")
        if not results.rss and results.jobs >= 10_000:
            rss_reading(system, results)
    dramatiq = ["--processes", "2", "--threads", "8", "--n", str(n), "--modes", "throughput"]
    run_rival(rivals, results, "dramatiq", "dramatiq_bench.py", *dramatiq)
    for i, rate in enumerate(args.rates):
        if i:
            lat = ["--rate", str(rate), "--lat-seconds", str(args.seconds), "--modes", "latency"]
            run_rival(rivals, results, "celery", "celery_bench.py", *celery, *lat)
        log(f"jobtrail: latency at {rate:g} jobs/s for {args.seconds:g} s")
        paced = results.latency[rate] = load.latency(system, rate, args.seconds)
        results.jobs += paced.sent
        if paced.completed < paced.sent or paced.errors:
            results.notes.append(
                f"jobtrail at {rate:g}/s: {paced.errors} requests failed, "
                f"{paced.sent - paced.completed} of {paced.sent} jobs not completed "
                "within the drain time (left out of the percentiles)"
            )
    if not results.rss:
        rss_reading(system, results)
    if args.rss_100k:
        log(f"jobtrail: {100_000 - results.jobs} more jobs for the 100,000-job memory reading")
        load.fill(system, 100_000 - results.jobs)
        results.jobs = max(results.jobs, 100_000)
        rss_reading(system, results)
    system.check_alive()
    return results


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 jobs, 3 s windows: a check")
    parser.add_argument("--jobs", type=int, help="jobs per throughput run (default 5000)")
    parser.add_argument("--rates", default="50,100,200", help="offered jobs/s for latency")
    parser.add_argument("--seconds", type=float, help="seconds per latency window (default 15)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rss-100k",
        action="store_true",
        help="also read RSS after 100,000 jobs (adds about 5 minutes)",
    )
    parser.add_argument("--rivals", default="celery,dramatiq", help="celery,dramatiq or none")
    parser.add_argument("--anchors", help="the rival harness (default ../shared/anchors)")
    parser.add_argument(
        "--rival-python",
        default=os.environ.get("JOBTRAIL_BENCH_RIVAL_PYTHON", DEFAULT_PYTHON),
        help="the interpreter with Celery and Dramatiq installed",
    )
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (300 if args.quick else 5000)
    args.seconds = args.seconds or (3.0 if args.quick else 15.0)
    args.warmup = 50 if args.quick else 200
    args.rates = [float(r) for r in args.rates.split(",")]
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with it ignored
    started = time.monotonic()
    wanted = {r for r in args.rivals.split(",") if r and r != "none"}
    rivals: Rivals | None = None
    try:
        if wanted:
            rivals = Rivals(find_anchors(args.anchors), args.rival_python, wanted)
        about = machine(rivals.versions if rivals else {})
        with Scratch(args.workers) as system:
            results = measure(args, rivals, system)
    except SetupError as exc:
        print(f"bench-compare: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench-compare: interrupted", file=sys.stderr)
        return 130
    finally:
        if rivals is not None:
            rivals.close()
    print()
    print("\n".join(about))
    setups = {"celery": "Celery prefork -c 2, acks_late", "dramatiq": "Dramatiq 2 processes x 8"}
    print(
        f"sizes: {args.jobs:,} jobs per throughput run, latency windows of {args.seconds:g} s at "
        f"{', '.join(f'{r:g}' for r in args.rates)} jobs/s; jobtrail: {args.workers} workers, "
        f"no-op jobs (`noop`); {'; '.join(setups[r] for r in sorted(wanted)) or 'no rivals'}"
    )
    print("ratio = jobtrail / rival (above 1: better for jobs/s, worse for ms, CPU and MiB)")
    print()
    print(table(rows(results, args.rates)))
    for note in results.notes:
        print(f"note: {note}")
    print(
        f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"whole run {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
