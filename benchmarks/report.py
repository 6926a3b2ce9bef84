"""The table and the machine description that benchmarks.compare prints."""

from __future__ import annotations

import asyncio
import importlib.metadata
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
import redis

from benchmarks import load
from benchmarks.scratch import AMQP, POSTGRES, REDIS

PACKAGES = (
    "fastapi",
    "uvicorn",
    "faststream",
    "aio-pika",
    "pydantic",
    "eventsourcing",
    "psycopg",
    "redis",
    "httpx",
)

HOW = {
    "batch": "batch endpoint, 100 a POST",
    "request": "1 job a POST, 16 in flight",
    "message": "SubmitJob messages",
}
SERVICES = ("submitter", "scheduler", "worker", "projector")
CPU_GROUPS = (*SERVICES, "client", "postgres", "rabbitmq", "redis")


@dataclass
class Results:
    """What one run measured; ``jobs`` counts every job jobtrail ran so far."""

    throughput: dict[str, load.Throughput] = field(default_factory=dict)
    latency: dict[float, load.Latency] = field(default_factory=dict)
    rss: list[tuple[int, dict[str, float | None]]] = field(default_factory=list)
    rival: dict[str, dict[str, Any]] = field(default_factory=dict)  # "celery/throughput" -> line
    notes: list[str] = field(default_factory=list)
    jobs: int = 0


@dataclass
class Row:
    """One figure: jobtrail's value and the rivals' (None when there is none)."""

    figure: str
    jobtrail: float | None
    celery: float | None = None
    dramatiq: float | None = None
    digits: int = 1


def _value(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    """jobtrail / rival; "-" where the rival shows 0.00 (e.g. an idle PostgreSQL it does not
    use): a ratio to background noise says nothing."""
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs):
        return "-"
    if abs(theirs) < 0.005:
        return "-"
    return f"{ours / theirs:.2f}x"


def table(rows: list[Row]) -> str:
    """A Markdown table: figure, jobtrail, Celery, ratio, Dramatiq, ratio (ratio = jobtrail /
    rival: above 1 is better for a rate, worse for a time, CPU or memory figure)."""
    header = ["figure", "jobtrail", "Celery", "ratio", "Dramatiq", "ratio"]
    body = [
        [
            r.figure,
            _value(r.jobtrail, r.digits),
            _value(r.celery, r.digits),
            _ratio(r.jobtrail, r.celery),
            _value(r.dramatiq, r.digits),
            _ratio(r.jobtrail, r.dramatiq),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([render(header), rule, *(render(line) for line in body)])


def rows(results: Results, rates: list[float]) -> list[Row]:
    """The figures in table order. The rivals' throughput and CPU figures come from one run of
    each (``.delay()`` / ``.send()`` from one process), set against each way jobtrail is fed."""
    out: list[Row] = []
    celery = results.rival.get("celery/throughput")
    dramatiq = results.rival.get("dramatiq/throughput")

    def metric(line: dict[str, Any] | None, key: str) -> float | None:
        return None if line is None else line["metrics"].get(key)

    def cpu(line: dict[str, Any] | None, key: str) -> float | None:
        if line is None or key not in line["cpu"]:
            return None
        return 1000 * float(line["cpu"][key]) / float(line["metrics"]["tasks"])

    for how, label in HOW.items():
        rate = results.throughput[how].rate
        c, d = metric(celery, "tasks_per_s"), metric(dramatiq, "tasks_per_s")
        out.append(Row(f"jobs/s, {label}", rate, c, d, digits=0))
    for offered in rates:
        lat, theirs = results.latency[offered], results.rival.get(f"celery/latency{int(offered)}")
        name = f"latency at {offered:g}/s offered"
        for q, key in ((50, "p50_ms"), (90, "p90_ms"), (99, "p99_ms"), (100, "max_ms")):
            label = "max" if q == 100 else f"p{q}"
            out.append(Row(f"{name}, {label} ms", lat.p(q), metric(theirs, key)))
        sent = metric(theirs, "achieved_send_rate")
        out.append(Row(f"{name}, sent jobs/s", lat.send_rate, sent))
    for how in HOW:
        tp = results.throughput[how]
        for group in CPU_GROUPS:
            shared = group in ("postgres", "rabbitmq", "redis")
            c, d = (cpu(celery, group), cpu(dramatiq, group)) if shared else (None, None)
            out.append(Row(f"CPU ms/job, {how}: {group}", tp.cpu_ms_per_job(group), c, d, 2))
        ours = sum(tp.cpu_ms_per_job(g) for g in (*SERVICES, "client"))
        c, d = cpu(celery, "bench"), cpu(dramatiq, "bench")
        out.append(Row(f"CPU ms/job, {how}: all processes (rival: client+workers)", ours, c, d, 2))
        c, d = cpu(celery, "system_busy"), cpu(dramatiq, "system_busy")
        out.append(Row(f"CPU ms/job, {how}: machine busy", tp.cpu_ms_per_job("machine"), c, d, 2))
    for jobs, reading in results.rss:
        for name, mib in sorted(reading.items()):
            out.append(Row(f"peak RSS MiB after {jobs:,} jobs: {name}", mib))
    if len(results.rss) == 2:
        (first_jobs, first), (last_jobs, last) = results.rss
        for name in sorted(first):
            before, after = first.get(name), last.get(name)
            growth = 100 * (after - before) / before if before and after else None
            out.append(Row(f"peak RSS growth %, {first_jobs:,} -> {last_jobs:,}: {name}", growth))
    return out


def _safe(read: Any) -> str:
    try:
        return str(read())
    except Exception as exc:
        return f"unknown ({exc.__class__.__name__})"


def _postgres() -> str:
    with psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def _rabbitmq() -> str:
    async def read() -> str:
        connection = await aio_pika.connect(AMQP, timeout=10)
        async with connection:
            props = connection.transport.connection.server_properties  # type: ignore[union-attr]
            return str(props.get("version", "?"))

    return asyncio.run(read())


def _redis() -> str:
    client: Any = redis.Redis.from_url(REDIS)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def _commit() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"],  # noqa: S607
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def machine(rival_versions: dict[str, str]) -> list[str]:
    """Lines describing the machine, the software and the load average (a shared box skews
    every figure: run on a quiet one)."""
    ours = ", ".join(f"{p} {_safe(lambda p=p: importlib.metadata.version(p))}" for p in PACKAGES)
    rivals = ", ".join(f"{k} {v}" for k, v in rival_versions.items()) or "not run"
    return [
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"{platform.system()} {platform.release()}, python {platform.python_version()}",
        f"services: PostgreSQL {_safe(_postgres)}, RabbitMQ {_safe(_rabbitmq)}, "
        f"Redis {_safe(_redis)} (all on 127.0.0.1)",
        f"jobtrail {_safe(lambda: importlib.metadata.version('jobtrail'))} "
        f"(commit {_safe(_commit)}): {ours}",
        f"rivals: {rivals}",
        f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]
