"""`jobtrail dlq list` and `replay` against a real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from contracts.messages import JobEvent, JobEventMessage
from contracts.names import Topology
from services.cli.dlq import list_dead_letters, republish
from shared.messaging import Routes, declare_topology, make_broker
from shared.settings import BusSettings
from tests.services import delete_topology


@pytest.fixture
async def topology(amqp_url: str) -> AsyncIterator[Topology]:
    bus = BusSettings(amqp_url=amqp_url, topology_prefix=f"jt-dlq-{uuid.uuid4().hex[:6]}")
    broker = make_broker(bus)
    await broker.connect()
    routes = Routes.from_settings(bus)
    await declare_topology(broker, routes, ["default"])
    await broker.stop()
    yield routes.topology
    await asyncio.to_thread(delete_topology, amqp_url, routes.topology.prefix)


async def test_list_shows_dead_letters_and_replay_returns_only_valid_ones(
    amqp_url: str, topology: Topology
) -> None:
    # Given a valid event rejected by its consumer, and an undecodable one, both dead-lettered
    job_id = uuid.uuid4()
    valid = JobEventMessage(
        correlation_id="c",
        data=JobEvent(job_id=job_id, version=1, notification_id=1, event_type="Submitted"),
    )
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(topology.events_exchange)
        for body in (valid.model_dump_json().encode(), b"\x00garbage"):
            await events.publish(
                aio_pika.Message(body, message_id=uuid.uuid4().hex), "job.submitted"
            )
        scheduler = await channel.get_queue(topology.scheduler_queue)
        for _ in range(2):
            message = await scheduler.get(timeout=5)
            await message.reject(requeue=False)

    # When an operator lists them
    letters = await list_dead_letters(amqp_url, topology, 10)
    letters = await list_dead_letters(amqp_url, topology, 10)  # listing twice removes nothing

    # Then both are shown with their origin and what is wrong
    assert len(letters) == 2
    good = next(letter for letter in letters if letter.valid)
    bad = next(letter for letter in letters if not letter.valid)
    assert good.job_id == str(job_id) and good.queue == topology.scheduler_queue
    assert good.routing_key == "job.submitted" and good.reason == "rejected"
    assert bad.problem

    # And replay sends the valid one back to its queue and leaves the broken one
    assert await republish(amqp_url, topology, None) == (1, 1)
    assert [letter.valid for letter in await list_dead_letters(amqp_url, topology, 10)] == [False]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        scheduler = await channel.get_queue(topology.scheduler_queue)
        message = await scheduler.get(timeout=5)
        assert JobEventMessage.model_validate_json(message.body).data.job_id == job_id
        await message.ack()
