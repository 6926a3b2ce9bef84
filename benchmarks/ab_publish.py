"""Publishing on commit, old against new: submit -> COMPLETED latency of two checkouts, side by
side, alternating rounds.

Usage: python -m benchmarks.ab_publish OLD_CHECKOUT NEW_CHECKOUT [--rounds 6] [--rate 50]
       [--seconds 15] [--workers 2] [--new-env KEY=VALUE ...] [--old-env KEY=VALUE ...]

Each checkout (a git worktree with its own ``make setup``) runs all four services (``--workers``
workers, default settings) with its own interpreter, on scratch names (benchmarks.scratch). Every
round offers each side ``--rate`` no-op jobs a second for ``--seconds`` (benchmarks.load
``latency``: open loop, client send time -> the Completed event's time), the order swapped each
round so that neither side always runs first on a busy machine; it also reads the CPU each
service spent (from /proc) per job, and the dispatch hop of each job (Scheduled -> Started event
times: the work message's way from the commit that scheduled the job to the worker's claim).
``--new-env`` / ``--old-env`` set variables on one side only (say
``--old-env JOBTRAIL_PUBLISH_ON_COMMIT=false`` to compare a checkout with itself).

Prints each round's figures, then the medians per side and the new/old ratios. It asserts
nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import time
from pathlib import Path
from types import FrameType
from uuid import UUID

from benchmarks import load
from benchmarks.procstat import CpuMeter, percentile
from benchmarks.scratch import CheckoutSupervisor, Scratch
from shared.domain import Job


class Side(Scratch):
    def __init__(self, checkout: Path, workers: int, env: dict[str, str]) -> None:
        super().__init__(workers=workers)
        self.env |= env
        self.supervisor = CheckoutSupervisor(
            workers=workers, env=self.env, log_dir=self.log_dir, checkout=checkout
        )


def dispatch_ms(side: Side, after: int) -> list[float]:
    """Per job, Scheduled -> Started (the hop this change shortens: the work message's way from
    the commit that scheduled the job to the worker's claim), both on this machine's clock."""
    assert side.store is not None
    scheduled: dict[UUID, float] = {}
    out: list[float] = []
    while page := side.store.events_after(after, 2000, kinds=[Job.Scheduled, Job.Started]):
        for _, event in page:
            at = event.timestamp.timestamp()
            if isinstance(event, Job.Scheduled):
                scheduled[event.originator_id] = at
            elif event.originator_id in scheduled:
                out.append(1000 * (at - scheduled.pop(event.originator_id)))
        after = page[-1][0]
    return out


def measure(side: Side, rate: float, seconds: float) -> dict[str, float]:
    meter = CpuMeter(side.groups).start()
    after = side.head()
    result = load.latency(side, rate, seconds)
    cpu = meter.stop()
    side.check_alive()
    hop = dispatch_ms(side, after)
    figures = {
        "p50 ms": result.p(50),
        "p90 ms": result.p(90),
        "p99 ms": result.p(99),
        "max ms": max(result.ms, default=0.0),
        "completed %": 100 * result.completed / max(result.sent, 1),
        "dispatch p50 ms": percentile(hop, 50),
        "dispatch p99 ms": percentile(hop, 99),
    }
    for group in ("submitter", "scheduler", "worker", "projector", "postgres", "rabbitmq", "redis"):
        figures[f"cpu {group} ms/job"] = 1000 * cpu.get(group, 0.0) / max(result.completed, 1)
    figures["cpu services ms/job"] = sum(
        figures[f"cpu {g} ms/job"] for g in ("submitter", "scheduler", "worker", "projector")
    )
    return figures


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)  # stop cleanly: the scratch names are deleted
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with it ignored
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--old-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    new_env = dict(item.split("=", 1) for item in args.new_env)
    old_env = dict(item.split("=", 1) for item in args.old_env)
    with contextlib.ExitStack() as stack:
        sides = {
            "old": Side(args.old.resolve(), args.workers, old_env),
            "new": Side(args.new.resolve(), args.workers, new_env),
        }
        for side in sides.values():
            stack.enter_context(side)
            side.start()
        for side in sides.values():  # warm up: imports, pools, connections on every path
            load.latency(side, args.rate, 3)
        results: dict[str, dict[str, list[float]]] = {name: {} for name in sides}
        for n in range(args.rounds):
            order = ["old", "new"] if n % 2 == 0 else ["new", "old"]
            for name in order:
                time.sleep(1)
                figures = measure(sides[name], args.rate, args.seconds)
                for key, value in figures.items():
                    results[name].setdefault(key, []).append(value)
                shown = "  ".join(
                    f"{k} {v:.1f}" for k, v in figures.items() if not k.startswith("cpu ")
                )
                cpu = figures["cpu services ms/job"]
                print(f"round {n + 1} {name}: {shown}  cpu services {cpu:.2f} ms/job", flush=True)
        print(f"\nmedians of {args.rounds} rounds at {args.rate:g}/s     old      new  new/old")
        for key in results["old"]:
            old = statistics.median(results["old"][key])
            new = statistics.median(results["new"][key])
            ratio = new / old if old else float("nan")
            print(f"{key:28s} {old:8.2f} {new:8.2f}   {ratio:6.2f}")


if __name__ == "__main__":
    main()
