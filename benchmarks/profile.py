"""Where each service spends its CPU under load: py-spy samples every service process at once.

Usage: python -m benchmarks.profile [--how request|batch|message] [--jobs 3000] [--seconds 15]
       [--top 12] [--out DIR] [--py-spy PATH]

Starts the four services on scratch names (benchmarks.scratch), submits ``--jobs`` no-op jobs
``--how`` (the workloads of benchmarks.compare), and while they run records each service with
``py-spy record --gil --format raw`` (collapsed stacks of the thread holding the GIL, i.e. where
Python spends CPU; ``--wall`` samples every thread, waits included) for ``--seconds``. Prints,
per service, the functions with the most samples on top of the stack (own time) and the
project and library frames with the most samples anywhere on the stack (inclusive time). The raw
files stay in ``--out`` for flame graphs. py-spy is not a dependency of the project: install it
(`pip install py-spy`) and run this as root, or where ptrace is allowed.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from benchmarks import load
from benchmarks.scratch import Scratch


def record(py_spy: str, pid: int, seconds: float, out: Path, gil: bool) -> subprocess.Popen[bytes]:
    command = [py_spy, "record", "-p", str(pid), "-d", str(max(1, round(seconds)))]
    command += ["--gil"] if gil else []
    return subprocess.Popen(  # noqa: S603 (py-spy, given by the user, on our own processes)
        [*command, "-r", "200", "-f", "raw", "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _function(frame: str) -> str:
    """``name (path/to/file.py:123)`` as ``name (to/file.py)``: samples add up per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def summarise(raw: Path, top: int) -> str:
    """Own and inclusive sample shares of the collapsed stacks in ``raw``."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";")]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; own time:"]
    lines += [f"    {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive (frames of jobtrail and its libraries, not the event loop):")
    skip = ("asyncio/", "threading.py", "futures/thread.py", "<module>", "runpy", "uvicorn/")
    skip += ("run (", "run_forever")  # each service's entry point: every sample is under it
    picked = [(f, n) for f, n in inclusive.most_common() if not any(s in f for s in skip)]
    lines += [f"    {100 * n / total:5.1f} %  {f}" for f, n in picked[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--how", choices=sorted(load.HOW), default="request")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--wall",
        action="store_true",
        help="sample every thread, waiting ones too (wall time; default: the GIL holder, CPU)",
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    args = parser.parse_args()
    if not Path(args.py_spy).exists() and not shutil.which(args.py_spy):
        raise SystemExit("py-spy not found: pip install py-spy (or give --py-spy PATH)")
    out = args.out or Path(tempfile.mkdtemp(prefix="jobtrail-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    with Scratch() as system:
        system.start()
        load.throughput(system, args.how, 200)  # warm up: imports, pools, queues
        result: list[load.Throughput] = []
        runner = threading.Thread(
            target=lambda: result.append(load.throughput(system, args.how, args.jobs))
        )
        runner.start()
        recorders = {
            name: record(args.py_spy, pid, args.seconds, out / f"{name}.txt", not args.wall)
            for pid, name in system.pids().items()
        }
        for recorder in recorders.values():
            recorder.wait()
        runner.join()
        if result:
            print(f"{args.jobs} noop jobs by {args.how}: {result[0].rate:.0f} jobs/s end to end")
        for name in sorted(recorders):
            print(f"\n{name} ({out / (name + '.txt')})")
            raw = out / f"{name}.txt"
            print(summarise(raw, args.top) if raw.exists() else "  (py-spy wrote nothing)")


if __name__ == "__main__":
    main()
