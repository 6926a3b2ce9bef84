"""Two checkouts of jobtrail side by side: CPU per job of each service, old against new.

Usage: python -m benchmarks.ab OLD_DIR NEW_DIR [--rounds 6] [--jobs 1500] [--how request]
       [--warmup 300] [--workers 2] [--env NAME=VALUE ...] [--old-env ...] [--new-env ...]

Each checkout (a git worktree with its own .venv, `make setup` done) runs its four services on
scratch names (benchmarks.scratch) from its own interpreter and code, both systems up at once.
Rounds alternate old and new (old first in odd rounds, new first in even ones), each submitting
``--jobs`` no-op jobs ``--how`` (benchmarks.load) and reading each service's CPU from /proc; on a
busy, shared machine that is what keeps the comparison fair: both sides see the same noise, so
the medians over rounds and their ratios mean something where one absolute figure would not.
Prints, per process group, the median CPU ms per job of each side and the ratio new/old, and
the median jobs/s. ``--env`` sets a variable for both sides' services, ``--old-env`` and
``--new-env`` for one side only (e.g. ``--new-env JOBTRAIL_UVLOOP=false`` to A/B a setting on
one checkout given twice). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

# Runs inside each checkout, with its interpreter: only benchmarks.scratch and benchmarks.load,
# which both sides have. Reads "ROUND <jobs>" lines, answers one JSON line per round.
RUNNER = """
import json, os, sys
from benchmarks import load
from benchmarks.scratch import Scratch

how, warmup, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Scratch(workers=workers) as system:
    system.env.update(json.loads(os.environ.get("AB_ENV", "{}")))
    system.supervisor.env.update(json.loads(os.environ.get("AB_ENV", "{}")))
    system.start()
    if warmup:
        load.throughput(system, how, warmup)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        jobs = int(line.split()[1])
        run = load.throughput(system, how, jobs)
        cpu = {k: v for k, v in run.cpu.items()}
        print(json.dumps({"jobs": run.jobs, "seconds": run.seconds, "cpu": cpu}), flush=True)
"""

GROUPS = ("worker", "scheduler", "submitter", "projector", "postgres", "rabbitmq", "redis")


class Side:
    """One checkout's services, driven through its runner's stdin and stdout."""

    def __init__(
        self, name: str, root: Path, how: str, warmup: int, workers: int, env: dict[str, str]
    ) -> None:
        self.name = name
        python = root / ".venv" / "bin" / "python"
        self.process = subprocess.Popen(  # noqa: S603 (the checkout's own interpreter)
            [str(python), "-c", RUNNER, how, str(warmup), str(workers)],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"AB_ENV": json.dumps(env)},
        )
        self.rounds: list[dict[str, Any]] = []
        self._read()

    def _read(self) -> dict[str, Any]:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the runner stopped (exit {self.process.wait()})")
        return dict(json.loads(line))

    def round(self, jobs: int) -> dict[str, Any]:
        stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        stdin.write(f"ROUND {jobs}\n")
        stdin.flush()
        result = self._read()
        self.rounds.append(result)
        return result

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=120)

    def ms_per_job(self, group: str) -> float:
        return statistics.median(1000 * r["cpu"].get(group, 0.0) / r["jobs"] for r in self.rounds)

    def rate(self) -> float:
        return statistics.median(r["jobs"] / r["seconds"] for r in self.rounds)


def _pairs(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--how", default="request", choices=("request", "batch", "message"))
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--old-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--new-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    common = _pairs(args.env)
    sides = [
        Side("old", args.old, args.how, args.warmup, args.workers, common | _pairs(args.old_env)),
        Side("new", args.new, args.how, args.warmup, args.workers, common | _pairs(args.new_env)),
    ]
    try:
        for n in range(args.rounds):
            for side in sides if n % 2 == 0 else reversed(sides):
                result = side.round(args.jobs)
                rate = result["jobs"] / result["seconds"]
                print(
                    f"{time.strftime('%H:%M:%S')} round {n + 1} {side.name}: {rate:6.1f} jobs/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for side in sides:
            side.close()
    old, new = sides
    print(f"{args.rounds} rounds of {args.jobs} jobs ({args.how}), medians; CPU ms per job:")
    print(f"  {'process':<10} {'old':>8} {'new':>8} {'new/old':>8}")
    for group in GROUPS:
        a, b = old.ms_per_job(group), new.ms_per_job(group)
        ratio = f"{b / a:8.2f}" if a else f"{'-':>8}"
        print(f"  {group:<10} {a:8.2f} {b:8.2f} {ratio}")
    a, b = old.rate(), new.rate()
    print(f"  {'jobs/s':<10} {a:8.1f} {b:8.1f} {b / a:8.2f}")


if __name__ == "__main__":
    main()
