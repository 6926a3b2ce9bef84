"""A worker takes no more work messages than its prefetch (concurrency x prefetch multiplier).

The work queues are declared before the worker's subscribers start; if the subscribers consumed
on the channel that declared them (the default one, with no prefetch), RabbitMQ would push the
whole backlog to the first worker: the others would idle while it holds messages it cannot run,
and a crash would hand them all back at once. Real PostgreSQL and RabbitMQ; the worker is a real
OS process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from contracts.names import Topology
from shared.domain import Job
from shared.eventstore import JobStore, existing
from shared.outbox import to_message
from tests.jobs import CAUSE
from tests.processes import Service, free_port, system_env
from tests.services import delete_topology

CONCURRENCY = 2
MULTIPLIER = 2
BACKLOG = 10


@pytest.fixture
def prefix(amqp_url: str, topology_prefix: str) -> Iterator[str]:
    """A topology of this test's own: its work queue holds only the messages sent here."""
    prefix = f"{topology_prefix}-pf{uuid.uuid4().hex[:4]}"
    yield prefix
    delete_topology(amqp_url, prefix)


@pytest.fixture
def slot_wait_s() -> float:
    return 600.0


@pytest.fixture
def worker(
    postgres_url: str,
    amqp_url: str,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    slot_wait_s: float,
) -> Iterator[Service]:
    env = system_env(postgres_url, amqp_url, redis_url, prefix, free_port()) | {
        "JOBTRAIL_WORKER_CONCURRENCY": str(CONCURRENCY),
        "JOBTRAIL_WORKER_PREFETCH_MULTIPLIER": str(MULTIPLIER),
        "JOBTRAIL_WORKER_SLOT_WAIT_S": str(slot_wait_s),
        "JOBTRAIL_WORKER_QUEUES": "io",
        "JOBTRAIL_WORKER_LEASE_S": "60",
        "JOBTRAIL_WORKER_SHUTDOWN_GRACE_S": "0",
    }
    service = Service("worker-prefetch", env, tmp_path).start()
    try:
        yield service
    finally:
        service.stop()


def _scheduled_sleepers(store: JobStore, count: int) -> list[tuple[str, bytes, str]]:
    """``count`` io.sleep jobs of a minute, SCHEDULED in the log; their work messages."""
    messages = []
    for _ in range(count):
        job_id = uuid.uuid4()
        store.execute(
            job_id,
            lambda _, job_id=job_id: Job.submit(
                CAUSE, job_type="io.sleep", payload={"seconds": 60}, job_id=job_id, queue="io"
            ),
        )
        store.execute(job_id, existing(lambda job: job.schedule(CAUSE)))
        scheduled = store.history(job_id)[-1]
        out = to_message(1, scheduled)
        assert out is not None
        messages.append((out.routing_key, out.body, out.message_id))
    return messages


async def _send(amqp_url: str, prefix: str, messages: list[tuple[str, bytes, str]]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Topology(prefix).events_exchange)
        for key, body, message_id in messages:
            message = aio_pika.Message(
                body, message_id=message_id, content_type="application/json", priority=5
            )
            await exchange.publish(message, routing_key=key, mandatory=True)


async def _ready(amqp_url: str, prefix: str) -> int:
    """Messages in the work queue not delivered to any consumer."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Topology(prefix).work_queue("io"), passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)


def _running(store: JobStore, job_ids: set[uuid.UUID]) -> int:
    return sum(1 for job in store.get_many(list(job_ids)) if job.status.value == "RUNNING")


def _wait_for_queue(amqp_url: str, prefix: str, worker: Service, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
        try:
            asyncio.run(_ready(amqp_url, prefix))
            return
        except aio_pika.exceptions.ChannelClosed:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _fill(store: JobStore, worker: Service, amqp_url: str, prefix: str) -> set[uuid.UUID]:
    """BACKLOG minute-long jobs sent; returns once the worker runs CONCURRENCY of them."""
    _wait_for_queue(amqp_url, prefix, worker)  # the worker declared its topology
    messages = _scheduled_sleepers(store, BACKLOG)
    job_ids = {uuid.UUID(str(_job_of(body))) for _, body, _ in messages}
    asyncio.run(_send(amqp_url, prefix, messages))
    deadline = time.monotonic() + 60
    while _running(store, job_ids) < CONCURRENCY:
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
        assert time.monotonic() < deadline, f"the worker did not start its jobs\n{worker.tail()}"
        time.sleep(0.1)
    return job_ids


def test_worker_holds_at_most_its_prefetch(
    store: JobStore, worker: Service, amqp_url: str, prefix: str
) -> None:
    job_ids = _fill(store, worker, amqp_url, prefix)

    # Both slots are busy for a minute: nothing is acknowledged, so the worker holds what the
    # broker pushed to it (two running, two waiting for a slot); the rest must still be ready.
    assert asyncio.run(_ready(amqp_url, prefix)) == BACKLOG - CONCURRENCY * MULTIPLIER
    assert _running(store, job_ids) == CONCURRENCY  # the waiting ones are not claimed


@pytest.mark.parametrize("slot_wait_s", [1.0])
def test_a_delivery_waiting_too_long_for_a_slot_goes_back_to_the_queue(
    store: JobStore, worker: Service, amqp_url: str, prefix: str
) -> None:
    # Given a worker whose slots are busy for a minute, holding deliveries it cannot run yet
    job_ids = _fill(store, worker, amqp_url, prefix)

    # When another consumer (one with free slots) takes what the queue offers for a while
    taken = asyncio.run(_take_all(amqp_url, prefix, seconds=15.0))

    # Then it also gets the deliveries the busy worker held past its slot wait, not only the
    # ready ones; the busy worker claimed none of them
    assert len(taken) == BACKLOG - CONCURRENCY, worker.tail()
    assert _running(store, job_ids) == CONCURRENCY


async def _take_all(amqp_url: str, prefix: str, seconds: float) -> set[str]:
    """Message ids delivered to a consumer that holds every delivery (no ack) for ``seconds``,
    or until it holds every message not running."""
    seen: set[str] = set()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=BACKLOG)
        queue = await channel.declare_queue(Topology(prefix).work_queue("io"), passive=True)

        enough = asyncio.Event()

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            seen.add(str(message.message_id))
            if len(seen) >= BACKLOG - CONCURRENCY:
                enough.set()

        await queue.consume(hold)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await enough.wait()
    return seen


def _job_of(body: bytes) -> str:
    from contracts.messages import JobEventMessage

    return str(JobEventMessage.model_validate_json(body).data.job_id)
