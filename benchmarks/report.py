"""The table and the machine description that benchmarks.compare prints."""

from __future__ import annotations

import asyncio
import importlib.metadata
import math
import os
import platform
from dataclasses import dataclass
from typing import Any

import aio_pika
import psycopg
import redis

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
    if ours is None or theirs is None or not theirs or math.isnan(ours) or math.isnan(theirs):
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
        f"jobtrail {_safe(lambda: importlib.metadata.version('jobtrail'))}: {ours}",
        f"rivals: {rivals}",
        f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]
