"""The submitter's HTTP cost, old against new: two checkouts side by side, alternating rounds.

Usage: python -m benchmarks.submitter_ab OLD_CHECKOUT NEW_CHECKOUT [--rounds 5] [--jobs 1500]
       [--idle 300]

Each checkout (a git worktree with its own ``make setup``) runs its own submitter and projector
(the projector fills Redis, which status reads are served from) with its own interpreter, on
scratch names (benchmarks.scratch). Every round measures each side in turn, the order swapped
each round so that neither side always runs first on a busy machine:

- ``cpu POST``: the submitter's CPU (user + system, from /proc) per ``POST /v1/jobs`` with 16
  requests in flight, a no-op job each; ``loop`` the event loop's thread alone (HTTP, the
  application, the hand-off to the store), ``all`` every thread (the store's too);
- ``cpu GET``: the same for ``GET /v1/jobs/{id}`` of known jobs, 16 in flight;
- ``cpu healthz``: the same for ``GET /healthz`` (no I/O: the HTTP server and framework alone);
- ``idle POST`` and ``idle GET``: one request at a time on one keep-alive connection (stdlib
  http.client, the lightest client at hand), a pause between requests so the server is idle when
  each arrives; the client's view of the latency, p50 and p99.

Prints each round's figures and, at the end, the medians per side and new/old ratios. Scheduler
and workers do not run: the jobs stay due, which costs the submitter nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks import scratch
from benchmarks.procstat import percentile
from benchmarks.scratch import Scratch
from services.cli.supervisor import Child

NOOP = json.dumps({"type": "noop", "payload": {}}).encode()
IN_FLIGHT = 16
Call = tuple[str, str, bytes | None]


@dataclass
class CheckoutSupervisor(scratch.CheckoutSupervisor):
    """The submitter and the projector of another checkout, with that checkout's interpreter."""

    def __post_init__(self) -> None:
        self.children = [Child(n, f"services.{n}") for n in ("projector", "submitter")]


class Side(Scratch):
    def __init__(self, checkout: Path) -> None:
        super().__init__(workers=0)
        self.checkout = checkout
        self.supervisor = CheckoutSupervisor(env=self.env, log_dir=self.log_dir, checkout=checkout)
        self.ids: list[str] = []

    def submitter_pid(self) -> int:
        return next(pid for pid, name in self.pids().items() if name == "submitter")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU seconds of process ``pid``, or of its thread ``thread`` alone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path, "rb") as f:
        stat = f.read().decode()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(side: Side, requests: list[Call]) -> list[str]:
    """Sends the requests, 16 in flight; returns the ids of the jobs accepted (POSTs)."""
    pending = list(reversed(requests))
    ids: list[str] = []
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    headers = {"content-type": "application/json"} | side.headers
    async with httpx.AsyncClient(base_url=side.base_url, timeout=60, limits=limits) as http:

        async def sender() -> None:
            while pending:
                method, path, body = pending.pop()
                try:
                    response = await http.request(method, path, content=body, headers=headers)
                except httpx.TransportError as exc:  # a dropped connection: counted, sent again
                    print(f"{side.checkout.name}: {method} {path}: {exc!r}; sent again", flush=True)
                    pending.append((method, path, body))
                    continue
                if response.status_code >= 400:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
                if method == "POST":
                    ids.append(response.json()["id"])

        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
    return ids


def cpu_per_request(side: Side, requests: list[Call]) -> tuple[float, float]:
    """The submitter's CPU milliseconds per request while serving ``requests``: its event
    loop's thread (the main thread), and all its threads."""
    pid = side.submitter_pid()
    before = cpu_seconds(pid, pid), cpu_seconds(pid)
    ids = asyncio.run(_load(side, requests))
    loop, every = cpu_seconds(pid, pid) - before[0], cpu_seconds(pid) - before[1]
    side.ids.extend(ids)
    return 1000 * loop / len(requests), 1000 * every / len(requests)


def idle(side: Side, method: str, paths: list[str], pause: float = 0.005) -> list[float]:
    """Milliseconds per request, one at a time with a pause before each."""
    host, port = side.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"content-type": "application/json"} | side.headers
    ms = []
    try:
        for path in paths:
            time.sleep(pause)
            start = time.perf_counter()
            connection.request(
                method, path, body=NOOP if method == "POST" else None, headers=headers
            )
            response = connection.getresponse()
            body = response.read()
            ms.append(1000 * (time.perf_counter() - start))
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {body!r}")
            if method == "POST":
                side.ids.append(json.loads(body)["id"])
    finally:
        connection.close()
    return ms


@dataclass
class Figures:
    rows: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.rows.setdefault(name, []).append(value)


def measure(side: Side, jobs: int, idle_requests: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    posts: list[Call] = [("POST", "/v1/jobs", NOOP)] * jobs
    figures["cpu POST loop"], figures["cpu POST all"] = cpu_per_request(side, posts)
    known = side.ids[-jobs:]
    time.sleep(2)  # the projector catches up: the reads are served from Redis
    gets: list[Call] = [("GET", f"/v1/jobs/{job_id}", None) for job_id in known]
    figures["cpu GET loop"], figures["cpu GET all"] = cpu_per_request(side, gets)
    health: list[Call] = [("GET", "/healthz", None)] * jobs
    figures["cpu healthz loop"], figures["cpu healthz all"] = cpu_per_request(side, health)
    post_ms = idle(side, "POST", ["/v1/jobs"] * idle_requests)
    figures["idle POST p50"] = percentile(post_ms, 50)
    figures["idle POST p99"] = percentile(post_ms, 99)
    get_ms = idle(side, "GET", [f"/v1/jobs/{known[i % len(known)]}" for i in range(idle_requests)])
    figures["idle GET p50"] = percentile(get_ms, 50)
    figures["idle GET p99"] = percentile(get_ms, 99)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--idle", type=int, default=300)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        sides = {"old": Side(args.old.resolve()), "new": Side(args.new.resolve())}
        for side in sides.values():
            stack.enter_context(side)
            side.start()
        for side in sides.values():  # warm up: imports, pools, the first Redis entries
            measure(side, 300, 50)
            time.sleep(2)  # the projector catches up: the reads hit Redis
        results = {name: Figures() for name in sides}
        for n in range(args.rounds):
            order = ["old", "new"] if n % 2 == 0 else ["new", "old"]
            for name in order:
                figures = measure(sides[name], args.jobs, args.idle)
                for key, value in figures.items():
                    results[name].add(key, value)
                shown = "  ".join(f"{k} {v:.2f}" for k, v in figures.items())
                print(f"round {n + 1} {name}: {shown}", flush=True)
        print("\nmedians (ms)            old      new   new/old")
        for key in results["old"].rows:
            old = statistics.median(results["old"].rows[key])
            new = statistics.median(results["new"].rows[key])
            print(f"{key:20s} {old:8.3f} {new:8.3f}   {new / old:6.2f}")


if __name__ == "__main__":
    main()
