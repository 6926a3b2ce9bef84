"""CPU seconds and peak memory of processes, read from /proc (Linux), for benchmarks.compare.

Read the way the rival harness reads them (``benchlib.CpuMeter`` in ../shared/anchors): PostgreSQL,
RabbitMQ and Redis by process name, whatever database or queue they serve; the machine's busy time
from /proc/stat. On top of that, jobtrail's own processes by pid, each under a group name.
Nothing is signalled or changed: only files under /proc are read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BY_NAME = {
    "postgres": ("postgres",),
    "rabbitmq": ("beam.smp", "erl_child_setup", "inet_gethost", "epmd"),
    "redis": ("redis-server",),
}


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _comm_and_ticks(pid: int) -> tuple[str, int] | None:
    """The process's name and its user + system CPU ticks (all its threads)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    end = stat.rfind(")")
    fields = stat[end + 2 :].split()
    return stat[stat.find("(") + 1 : end], int(fields[11]) + int(fields[12])


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of the whole machine since boot."""
    line = (_read("/proc/stat") or "cpu 0 0 0 0").splitlines()[0]
    ticks = [int(x) for x in line.split()[1:9]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return sum(ticks) - idle, sum(ticks)


def _group_of(comm: str) -> str | None:
    for group, names in BY_NAME.items():
        if any(comm.startswith(name) for name in names):
            return group
    return None


@dataclass
class CpuMeter:
    """CPU seconds per group between ``start()`` and ``stop()``.

    ``own`` returns the pids of the processes to account by pid (pid -> group), read at each
    snapshot, so that a restarted service is still counted. A process that started during the
    window counts from zero, one that ended during it is lost (as in benchlib).
    """

    own: Callable[[], Mapping[int, str]]
    _start: dict[int, tuple[str, int]] = field(default_factory=dict)
    _busy: int = 0
    _at: float = 0.0

    def _snapshot(self) -> dict[int, tuple[str, int]]:
        own = self.own()
        out: dict[int, tuple[str, int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            read = _comm_and_ticks(pid)
            if read is None:
                continue
            group = own.get(pid) or _group_of(read[0])
            if group:
                out[pid] = (group, read[1])
        return out

    def start(self) -> CpuMeter:
        self._start = self._snapshot()
        self._busy = _machine_ticks()[0]
        self._at = time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        """Seconds per group, plus ``machine`` (busy time of every core) and ``wall``."""
        end = self._snapshot()
        busy = _machine_ticks()[0]
        seconds: dict[str, float] = dict.fromkeys(BY_NAME, 0.0)
        for pid, (group, ticks) in end.items():
            before = self._start.get(pid)
            base = before[1] if before and before[0] == group else 0
            seconds[group] = seconds.get(group, 0.0) + (ticks - base) / CLOCK_TICKS
        seconds["machine"] = (busy - self._busy) / CLOCK_TICKS
        seconds["wall"] = time.perf_counter() - self._at
        return seconds


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set size so far (VmHWM), in MiB; None when it is gone."""
    status = _read(f"/proc/{pid}/status")
    for line in (status or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100), the same rule as benchlib.pct."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]
