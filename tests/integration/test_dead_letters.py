"""Messages a consumer rejects are recorded in PostgreSQL against their job and counted."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import pytest
from prometheus_client import REGISTRY

from services.scheduler import subscribers
from shared import dead_letters
from shared.domain import Cause, Job
from shared.eventstore import AsyncJobStore
from shared.messaging import Routes
from shared.service import Service
from shared.settings import BusSettings, StoreSettings
from tests.services import delete_topology


@dataclass
class Consumer:
    store: AsyncJobStore
    routes: Routes


@pytest.fixture
async def scheduler(postgres_url: str, amqp_url: str) -> AsyncIterator[Consumer]:
    """The scheduler's real subscriber, with the dead-letter middleware, on its own prefix."""
    bus = BusSettings(
        amqp_url=amqp_url, topology_prefix=f"jt-dl-{uuid.uuid4().hex[:6]}", delivery_limit=2
    )
    routes = Routes.from_settings(bus)
    settings = StoreSettings(postgres_url=postgres_url, postgres_pool_size=2)
    service = Service("scheduler", bus=bus, store=settings, serve_health=False)
    try:
        async with service:  # with the dead-letter middleware, as the scheduler runs
            await service.start(subscribers.router(service), publish=False)
            yield Consumer(service.store, routes)
    finally:
        await asyncio.to_thread(delete_topology, amqp_url, routes.topology.prefix)


def counted(queue: str, reason: str) -> float:
    labels = {"queue": queue, "reason": reason}
    return REGISTRY.get_sample_value("jobtrail_dead_letters_total", labels) or 0.0


async def test_a_rejected_message_is_recorded_against_its_job_and_counted(
    amqp_url: str, scheduler: Consumer
) -> None:
    # Given a job, and two messages the scheduler cannot read: one breaks its contract but names
    # the job, the other is not JSON at all
    cause = Cause("test", correlation_id="dl")
    job_id = uuid.uuid4()
    job = await scheduler.store.execute(
        job_id, lambda _: Job.submit(cause, job_type="cpu.hash", payload={}, job_id=job_id)
    )
    queue = scheduler.routes.topology.scheduler_queue
    before = counted(queue, "invalid")
    broken = json.dumps({"correlation_id": "c-1", "data": {"job_id": str(job.id)}}).encode()

    # When both arrive on the scheduler's queue
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(scheduler.routes.topology.events_exchange)
        for body, message_id in ((broken, "m-broken"), (b"\x00not json{", "m-garbage")):
            await events.publish(
                aio_pika.Message(body, message_id=message_id, correlation_id="c-1"),
                "job.submitted",
            )

    # Then both are recorded (within seconds: no retry loop), the first one against its job
    deadline = asyncio.get_running_loop().time() + 15
    rows: list[dict[str, object]] = []
    while len(rows) < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        rows = await scheduler.store.run_sync(
            dead_letters.recorded, scheduler.store.store, None, 10
        )
    by_id = {row["message_id"]: row for row in rows}
    assert set(by_id) == {"m-broken", "m-garbage"}, rows
    assert by_id["m-broken"]["job_id"] == job.id
    assert by_id["m-garbage"]["job_id"] is None
    assert {row["queue"] for row in rows} == {queue}
    assert {row["reason"] for row in rows} == {"invalid"}
    assert "ValidationError" in str(by_id["m-broken"]["error"])
    assert bytes(by_id["m-garbage"]["body"]) == b"\x00not json{"  # type: ignore[call-overload]
    # And the job's own dead letters are found by its id
    mine = await scheduler.store.run_sync(dead_letters.recorded, scheduler.store.store, job.id, 10)
    assert [row["message_id"] for row in mine] == ["m-broken"]
    # And counted
    assert counted(queue, "invalid") == before + 2
    # And the job's history is untouched: a dead letter is not an event
    assert len(await scheduler.store.history(job.id)) == 1


async def test_a_message_rabbitmq_dead_letters_at_its_delivery_limit_is_recorded(
    amqp_url: str, scheduler: Consumer
) -> None:
    # Given a SubmitJob command that names a job, in its quorum queue (delivery limit 2)
    job_id = uuid.uuid4()
    queue = scheduler.routes.topology.submit_queue
    before = counted(queue, "delivery_limit")
    body = json.dumps({"correlation_id": "c-2", "data": {"job_id": str(job_id)}}).encode()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        commands = await channel.get_exchange(scheduler.routes.topology.commands_exchange)
        await commands.publish(
            aio_pika.Message(body, message_id="m-limit", correlation_id="c-2"), "job.submit"
        )
        # When a consumer keeps handing it back (as a crashing consumer's connection would)
        submit = await channel.get_queue(queue)
        for _ in range(3):  # deliveries with x-delivery-count 0, 1, 2: the third is the last
            message = await submit.get(no_ack=False, timeout=5)
            await message.nack(requeue=True)
        assert await submit.get(no_ack=False, fail=False, timeout=2) is None

    # Then RabbitMQ dead-lettered it, and the ledger recorded it against its job and counted it
    deadline = asyncio.get_running_loop().time() + 15
    rows: list[dict[str, object]] = []
    while not rows and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        rows = await scheduler.store.run_sync(
            dead_letters.recorded, scheduler.store.store, job_id, 10
        )
    assert [(r["message_id"], r["queue"], r["reason"]) for r in rows] == [
        ("m-limit", queue, "delivery_limit")
    ]
    assert counted(queue, "delivery_limit") == before + 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"data": {"job_id": "6f1c2b8e-8d54-4a55-9a2e-3c1f0e6d7a10"}}', True),
        (b'{"job_id": "6f1c2b8e-8d54-4a55-9a2e-3c1f0e6d7a10"}', True),
        (b'{"data": {"job_id": "not-a-uuid"}}', False),
        (b"[1, 2]", False),
        (b"\xff\xfe", False),
    ],
)
def test_the_job_is_read_leniently_from_a_broken_body(body: bytes, expected: bool) -> None:
    assert (dead_letters.job_id_in(body) is not None) == expected


async def test_a_replayed_message_that_dies_again_is_recorded_as_a_second_death(
    postgres_url: str, amqp_url: str
) -> None:
    # Given a consumer that rejects a valid event with a new error at each delivery, with the
    # dead-letter middleware and the ledger
    from contracts.messages import JobEvent, JobEventMessage
    from services.cli.dlq import list_dead_letters, republish

    bus = BusSettings(amqp_url=amqp_url, topology_prefix=f"jt-dlr-{uuid.uuid4().hex[:6]}")
    routes = Routes.from_settings(bus)
    deliveries = 0
    settings = StoreSettings(postgres_url=postgres_url, postgres_pool_size=2)
    service = Service("scheduler", bus=bus, store=settings, serve_health=False)
    broker = service.broker
    job_id = uuid.uuid4()
    try:
        async with service:  # the dead-letter middleware, as every service has it

            @broker.subscriber(routes.scheduler, routes.events)
            async def failing(message: JobEventMessage) -> None:
                nonlocal deliveries
                deliveries += 1
                raise RuntimeError(f"death {deliveries}")

            await service.start(subscribers.dead_letter_ledger(service), publish=False)
            store = service.store

            async def rows_until(n: int) -> list[dict[str, object]]:
                deadline = asyncio.get_running_loop().time() + 15
                rows: list[dict[str, object]] = []
                while asyncio.get_running_loop().time() < deadline:
                    rows = await store.run_sync(dead_letters.recorded, store.store, job_id, 10)
                    if len(rows) >= n and deliveries >= n:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)  # the ledger's copy too
                return await store.run_sync(dead_letters.recorded, store.store, job_id, 10)

            async def in_dlq() -> None:
                deadline = asyncio.get_running_loop().time() + 15
                while not await list_dead_letters(amqp_url, routes.topology, 10):
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.2)

            event = JobEventMessage(
                correlation_id="c-r",
                data=JobEvent(job_id=job_id, version=1, notification_id=1, event_type="Submitted"),
            )
            await broker.publish(
                event,
                exchange=routes.events,
                routing_key="job.submitted",
                message_id="m-again",
            )
            # When it dies, is replayed, and dies again in the same queue
            first = await rows_until(1)
            assert [r["error"] for r in first] == ["RuntimeError: death 1"]
            await in_dlq()
            assert await republish(amqp_url, routes.topology, "m-again") == (1, 0)
            rows = await rows_until(2)
            # Then each death has its own row, with its own error
            assert sorted(str(r["error"]) for r in rows) == [
                "RuntimeError: death 1",
                "RuntimeError: death 2",
            ]
            assert {r["message_id"] for r in rows} == {"m-again"}
    finally:
        await asyncio.to_thread(delete_topology, amqp_url, routes.topology.prefix)
