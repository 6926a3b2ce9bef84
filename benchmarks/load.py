"""jobtrail's side of benchmarks.compare: no-op jobs submitted three ways, and paced latency.

Every figure runs from the client's first send to the last Completed event's timestamp in the
log (the worker's clock, the same machine), like the rivals' first send to the last result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import aio_pika
import httpx

from benchmarks.procstat import CpuMeter, percentile
from benchmarks.scratch import AMQP, Scratch
from contracts.messages import SubmitJob, SubmitJobMessage
from contracts.names import Topology

NOOP = {"type": "noop", "payload": {}}
BATCH = 100
IN_FLIGHT = 16
PUBLISH_WINDOW = 500


@dataclass
class Throughput:
    jobs: int
    seconds: float
    send_seconds: float
    cpu: dict[str, float] = field(default_factory=dict)
    refused: int = 0

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def cpu_ms_per_job(self, group: str) -> float:
        return 1000 * self.cpu.get(group, 0.0) / self.jobs


@dataclass
class Latency:
    offered: float
    sent: int
    completed: int
    send_rate: float
    ms: list[float]
    errors: int = 0

    def p(self, q: float) -> float:
        return percentile(self.ms, q)


def _client(system: Scratch) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    return httpx.AsyncClient(
        base_url=system.base_url, timeout=120, limits=limits, headers=system.headers
    )


async def by_batch(system: Scratch, jobs: int) -> int:
    """POST /v1/jobs/batch, 100 jobs a request, one request after the other; returns how many
    jobs were accepted."""
    accepted = 0
    async with _client(system) as http:
        for start in range(0, jobs, BATCH):
            body = {"jobs": [NOOP] * min(BATCH, jobs - start)}
            try:
                response = await http.post("/v1/jobs/batch", json=body)
                response.raise_for_status()
            except httpx.HTTPError:
                continue
            accepted += sum(1 for item in response.json() if not item["errors"])
    return accepted


async def by_request(system: Scratch, jobs: int) -> int:
    """POST /v1/jobs, one job a request, 16 requests in flight from one client; returns how
    many were accepted."""
    left, accepted = jobs, 0

    async def sender(http: httpx.AsyncClient) -> None:
        nonlocal left, accepted
        while left > 0:
            left -= 1
            with contextlib.suppress(httpx.HTTPError):
                (await http.post("/v1/jobs", json=NOOP)).raise_for_status()
                accepted += 1

    async with _client(system) as http:
        await asyncio.gather(*(sender(http) for _ in range(IN_FLIGHT)))
    return accepted


async def by_message(system: Scratch, jobs: int) -> int:
    """SubmitJob envelopes on the commands exchange (persistent, publisher confirms), 500 in
    flight; the submitter consumes them. Returns how many the broker confirmed."""
    topology = Topology(system.prefix)
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.commands_exchange, ensure=False)

        async def publish() -> bool:
            body = SubmitJobMessage(correlation_id="bench", data=SubmitJob(type="noop"))
            message = aio_pika.Message(
                body.model_dump_json().encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            try:
                await exchange.publish(message, routing_key=Topology.SUBMIT_KEY)
            except aio_pika.exceptions.AMQPError:
                return False
            return True

        confirmed = 0
        for start in range(0, jobs, PUBLISH_WINDOW):
            window = min(PUBLISH_WINDOW, jobs - start)
            confirmed += sum(await asyncio.gather(*(publish() for _ in range(window))))
    return confirmed


HOW: dict[str, Callable[[Scratch, int], Coroutine[Any, Any, int]]] = {
    "batch": by_batch,
    "request": by_request,
    "message": by_message,
}


def throughput(system: Scratch, how: str, jobs: int, timeout: float = 600.0) -> Throughput:
    """Submits ``jobs`` no-op jobs ``how``; times the first send to the last Completed event."""
    after = system.head()
    meter = CpuMeter(lambda: {**system.groups(), os.getpid(): "client"}).start()
    first_send = time.time()
    accepted = asyncio.run(HOW[how](system, jobs))
    send_seconds = time.time() - first_send
    system.check_alive()
    if not accepted:
        raise RuntimeError(f"{how}: not one of {jobs} jobs was accepted\n{system.tails()}")
    done = system.wait_completed(after, accepted, timeout)
    cpu = meter.stop()
    if done < accepted:
        raise TimeoutError(f"{how}: {done} of {accepted} accepted jobs completed in {timeout} s")
    last = max(system.completed_at(after).values())
    return Throughput(accepted, last - first_send, send_seconds, cpu, refused=jobs - accepted)


async def _paced(
    system: Scratch, rate: float, seconds: float
) -> tuple[dict[UUID, float], int, float]:
    """POST /v1/jobs at ``rate`` a second for ``seconds`` (open loop: a slow answer does not
    delay the next send); job id -> client send time, the number of failed requests and the
    rate at which requests were sent."""
    sent: dict[UUID, float] = {}
    errors = 0

    async def one(http: httpx.AsyncClient, at: float) -> None:
        nonlocal errors
        try:
            response = await http.post("/v1/jobs", json=NOOP)
            response.raise_for_status()
            sent[UUID(response.json()["id"])] = at
        except httpx.HTTPError:
            errors += 1

    async with _client(system) as http:
        total = int(rate * seconds)
        start = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, time.time())))
        send_rate = total / max(time.perf_counter() - start, 1e-9)
        await asyncio.gather(*tasks)
    return sent, errors, send_rate


def latency(system: Scratch, rate: float, seconds: float, drain_s: float = 180.0) -> Latency:
    """Submit -> Completed latency of jobs offered at ``rate`` a second for ``seconds``; waits
    up to ``drain_s`` for the backlog, and reports how many completed."""
    after = system.head()
    sent, errors, send_rate = asyncio.run(_paced(system, rate, seconds))
    system.wait_completed(after, len(sent), drain_s)
    completed = system.completed_at(after)
    ms = [(completed[job] - at) * 1000 for job, at in sent.items() if job in completed]
    return Latency(rate, len(sent), len(ms), send_rate, ms, errors)


def fill(system: Scratch, jobs: int, chunk: int = 5000) -> None:
    """Runs ``jobs`` more no-op jobs through the system (batch submission, ``chunk`` at a time,
    each chunk waited for), to age the services before a memory reading."""
    for start in range(0, jobs, chunk):
        n = min(chunk, jobs - start)
        after = system.head()
        accepted = asyncio.run(by_batch(system, n))
        if system.wait_completed(after, accepted, 600) < accepted:
            raise TimeoutError(f"fill: {n} jobs did not complete in 600 s")
