"""Commands, scheduler events and dead letters through a PostgreSQL outage longer than any budget.

The submitter's real subscribers, the scheduler's event subscriber and its dead-letter ledger run
on a real RabbitMQ; their PostgreSQL is reached through the TCP fault proxy, which refuses every
connection for the outage. The hold is shrunk to 1.5 s and the quorum queues' delivery limit to
2, so an outage of 8 s outlasts the hold five times over and the delivery limit twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import psycopg
import pytest

from contracts.messages import (
    CancelJob,
    CancelJobMessage,
    JobEvent,
    JobEventMessage,
    SubmitJob,
    SubmitJobMessage,
)
from services.scheduler import ledger
from services.scheduler import subscribers as scheduler_subscribers
from services.submitter import subscribers
from shared import dead_letters
from shared.domain import Cause, Job, Status, job_id_for_key
from shared.eventstore import AsyncJobStore, JobStore
from shared.messaging import Routes
from shared.service import Service
from shared.settings import BusSettings, RedisSettings, StoreSettings
from tests.chaos.proxy import Proxy
from tests.services import delete_topology

HOLD_S = 1.5
DELIVERY_LIMIT = 2


@dataclass
class Submitter:
    store: AsyncJobStore  # through the proxy, as the subscribers see it
    direct: JobStore  # straight to PostgreSQL, for the test's own reads
    routes: Routes
    proxy: Proxy


@pytest.fixture
async def submitter(
    postgres_url: str, amqp_url: str, redis_url: str, store: JobStore
) -> AsyncIterator[Submitter]:
    """The submitter's command subscribers, the scheduler's event subscriber, the dead-letter
    middleware and the ledger, on their own prefix, with PostgreSQL behind the fault proxy."""
    target = urlsplit(postgres_url)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    netloc = f"{target.username or 'postgres'}@127.0.0.1:{proxy.port}"
    proxied = urlunsplit(target._replace(netloc=netloc))
    bus = BusSettings(
        amqp_url=amqp_url,
        topology_prefix=f"jt-cmd-{uuid.uuid4().hex[:6]}",
        delivery_limit=DELIVERY_LIMIT,
        hold_s=HOLD_S,
    )
    routes = Routes.from_settings(bus)
    settings = StoreSettings(
        postgres_url=proxied,
        postgres_pool_size=2,
        store_retry_budget_s=0.5,
        postgres_connect_timeout_s=1,
    )
    redis = RedisSettings(redis_url=redis_url, redis_prefix=f"jt-cmd-{uuid.uuid4().hex}")
    # one process with both routers, as the services make them (prefetch as the submitter's)
    service = Service(
        "submitter",
        prefetch=16,
        serve_health=False,
        bus=bus,
        store=settings,
        redis=redis,
        job_modules=["examples.jobs"],
    )
    try:
        async with service:
            await service.start(
                subscribers.router(service), scheduler_subscribers.router(service), publish=False
            )
            try:
                yield Submitter(service.store, store, routes, proxy)
            finally:
                proxy.heal()
    finally:
        proxy.stop()
        await asyncio.to_thread(delete_topology, amqp_url, routes.topology.prefix)
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # the session's table
            conn.execute(
                "DELETE FROM jobtrail_dead_letters WHERE queue LIKE %s",
                [routes.topology.prefix + ".%"],
            )


async def publish(amqp_url: str, exchange: str, key: str, messages: list[aio_pika.Message]) -> None:
    """Publishes with confirms: each message is the broker's once this returns."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        for message in messages:
            await target.publish(message, routing_key=key, mandatory=True)


async def depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def recorded_letters(s: Submitter) -> list[dict[str, object]]:
    rows = await asyncio.to_thread(dead_letters.recorded, s.direct, None, 100)
    prefix = s.routes.topology.prefix
    return [row for row in rows if str(row["queue"]).startswith(prefix + ".")]


async def eventually(check, within_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def submit_message(key: str) -> aio_pika.Message:
    body = SubmitJobMessage(
        correlation_id=f"bus-{key}",
        data=SubmitJob(
            type="cpu.hash", payload={"text": key}, idempotency_key=key, queue="default"
        ),
    )
    return aio_pika.Message(
        body.model_dump_json().encode(),
        content_type="application/json",
        message_id=uuid.uuid4().hex,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def garbage(message_id: str) -> aio_pika.Message:
    """A command that is not JSON, although it says it is."""
    return aio_pika.Message(
        b"\x00not json{",
        content_type="application/json",
        message_id=message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def test_commands_outlive_an_outage_longer_than_every_budget_and_dead_letters_are_recorded(
    amqp_url: str, submitter: Submitter
) -> None:
    s, topology = submitter, submitter.routes.topology
    # Given a job waiting for a later run_at (so that a cancel finds it PENDING)
    cause = Cause("test", correlation_id="outage")
    waiting = uuid.uuid4()
    later = datetime.now(UTC) + timedelta(hours=1)
    await asyncio.to_thread(
        s.direct.execute,
        waiting,
        lambda _: Job.submit(cause, job_type="cpu.hash", payload={}, run_at=later, job_id=waiting),
    )
    # And PostgreSQL unreachable: every connection refused
    s.proxy.refuse()

    # When commands arrive (confirmed by the broker): submits, a cancel, and one that is not JSON
    keys = [f"outage-{uuid.uuid4().hex[:8]}-{n}" for n in range(5)]
    await publish(
        amqp_url, topology.commands_exchange, "job.submit", [submit_message(k) for k in keys]
    )
    cancel = CancelJobMessage(correlation_id="c", data=CancelJob(job_id=waiting, reason="no"))
    await publish(
        amqp_url,
        topology.commands_exchange,
        "job.cancel",
        [aio_pika.Message(cancel.model_dump_json().encode(), content_type="application/json")],
    )
    await publish(amqp_url, topology.commands_exchange, "job.submit", [garbage("m-garbage")])
    # And the outage lasts five holds, longer than the delivery limit allows for requeues
    await asyncio.sleep(8)
    # Then, still during the outage, only the invalid command is in the dead-letter queue
    assert await depth(amqp_url, topology.dead_letter_queue) == 1

    # When PostgreSQL is back
    s.proxy.heal()

    # Then every command takes effect, exactly once
    ids = [job_id_for_key(k) for k in keys]

    async def submitted() -> bool:
        jobs = await asyncio.to_thread(s.direct.get_many, ids)
        return len(jobs) == len(ids)

    await eventually(submitted, 30, "the submits held through the outage")
    for job_id in ids:
        history = await asyncio.to_thread(s.direct.history, job_id)
        assert [type(e).__name__ for e in history] == ["Submitted", "Scheduled"]

    async def cancelled() -> bool:
        return (await asyncio.to_thread(s.direct.get, waiting)).status is Status.CANCELLED

    await eventually(cancelled, 30, "the cancel held through the outage")
    # And the dead letter that died while the database was away is recorded, once
    await eventually(lambda: recorded_letters(s), 30, "the dead letter's record")
    await asyncio.sleep(2 * HOLD_S)  # time for a second record, if there were one
    rows = await recorded_letters(s)
    assert [(r["message_id"], r["queue"]) for r in rows] == [("m-garbage", topology.submit_queue)]
    # And nothing else was dead-lettered
    assert await depth(amqp_url, topology.dead_letter_queue) == 1
    assert await depth(amqp_url, topology.dead_letter_ledger) == 0


async def test_a_non_json_command_is_recorded_once_without_an_error(
    amqp_url: str, submitter: Submitter, caplog: pytest.LogCaptureFixture
) -> None:
    s, topology = submitter, submitter.routes.topology
    caplog.set_level(logging.WARNING)
    # When a command that says it is JSON but is not arrives, with the database up
    await publish(amqp_url, topology.commands_exchange, "job.submit", [garbage("m-not-json")])

    # Then it is recorded once, by the queue that rejected it, with the consumer's error
    rows = await eventually(lambda: recorded_letters(s), 15, "the dead letter's record")
    await eventually(
        lambda: _zero(depth(amqp_url, topology.dead_letter_ledger)), 15, "the ledger to ack"
    )
    await asyncio.sleep(1)
    rows = await recorded_letters(s)
    assert [(r["message_id"], r["queue"], r["reason"]) for r in rows] == [
        ("m-not-json", topology.submit_queue, "invalid")
    ]
    assert "JSONDecodeError" in str(rows[0]["error"]) or "json" in str(rows[0]["error"]).lower()
    assert bytes(rows[0]["body"]) == b"\x00not json{"  # type: ignore[call-overload]
    # And the ledger neither failed on it nor lost its copy (the dead-letter queue keeps one)
    ledger = topology.dead_letter_ledger
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and ledger in f"{r.getMessage()} {getattr(r, 'queue', '')}"
    ]
    assert not errors, [r.getMessage() for r in errors]
    assert await depth(amqp_url, topology.dead_letter_queue) == 1


def test_a_death_is_keyed_by_message_queue_and_count() -> None:
    @dataclass
    class Raw:
        body: bytes
        message_id: str | None
        headers: dict[str, object]
        correlation_id: str | None = None

    once = Raw(b"x", None, {})
    twice = Raw(b"x", None, {"x-death": [{"queue": "q", "reason": "rejected", "count": 1}]})
    # A consumer's reject now and the ledger's copy of that death carry the same key
    rejected = dead_letters.dead_letter("q", once, "invalid", "boom")
    copy = Raw(b"x", None, {"x-death": [{"queue": "q", "reason": "rejected", "count": 1}]})
    assert ledger.ledger_entry(copy).key == rejected.key
    # The next death of the same message, another queue or another message: other keys
    assert dead_letters.dead_letter("q", twice, "invalid", "boom").key != rejected.key
    assert dead_letters.dead_letter("r", once, "invalid", "boom").key != rejected.key
    assert dead_letters.dead_letter("q", Raw(b"y", None, {}), "invalid", "e").key != rejected.key
    # And whatever a header holds, reading it never fails, and NUL never reaches PostgreSQL
    odd = Raw(b"\xff", "id\x00", {"x-death": "nonsense"})
    letter = ledger.ledger_entry(odd)
    assert letter.queue == "unknown" and letter.message_id == "id\ufffd"
    assert json.dumps(letter.error)


async def _zero(value) -> bool:  # type: ignore[no-untyped-def]
    return await value == 0


async def test_the_store_reconnects_within_seconds_of_the_database_return(
    submitter: Submitter,
) -> None:
    # Given a store whose pool is in use when PostgreSQL goes away for 20 s
    s, loop = submitter, asyncio.get_running_loop()

    async def read() -> int:
        return await s.store.run_sync(s.store.store.max_notification_id)

    await read()
    s.proxy.refuse()
    end = loop.time() + 20
    while loop.time() < end:  # each broken connection is replaced in the background, with backoff
        with contextlib.suppress(Exception):
            await read()
        await asyncio.sleep(0.5)

    # When PostgreSQL is back
    s.proxy.heal()
    back = loop.time()

    # Then the store answers at once (psycopg_pool alone waits for its next attempt, doubling
    # from 1 s: 4 to 5 s after the database is back here, a minute after a long outage)
    while True:
        try:
            await read()
            break
        except Exception:
            assert loop.time() - back < 30, "the store did not come back"
            await asyncio.sleep(0.1)
    print(f"store back {loop.time() - back:.2f} s after PostgreSQL")
    assert loop.time() - back < 2.5


async def test_a_scheduler_event_outlives_an_outage_longer_than_its_hold_and_delivery_limit(
    amqp_url: str, submitter: Submitter
) -> None:
    s, topology = submitter, submitter.routes.topology
    # Given a job due now, whose Submitted event reaches the scheduler while PostgreSQL is away
    job_id = uuid.uuid4()
    cause = Cause("test", correlation_id="outage")
    await asyncio.to_thread(
        s.direct.execute,
        job_id,
        lambda _: Job.submit(cause, job_type="cpu.hash", payload={}, job_id=job_id),
    )
    s.proxy.refuse()
    event = JobEventMessage(
        correlation_id="outage",
        data=JobEvent(job_id=job_id, version=1, notification_id=1, event_type="Submitted"),
    )
    message = aio_pika.Message(event.model_dump_json().encode(), content_type="application/json")
    await publish(amqp_url, topology.events_exchange, "job.submitted", [message])
    # When the outage lasts five holds
    await asyncio.sleep(8)
    # Then the event is not dead-lettered, and it schedules its job once PostgreSQL is back
    assert await depth(amqp_url, topology.dead_letter_queue) == 0
    s.proxy.heal()

    async def scheduled() -> bool:
        return (await asyncio.to_thread(s.direct.get, job_id)).status is Status.SCHEDULED

    await eventually(scheduled, 30, "the held event to schedule its job")
    assert [type(e).__name__ for e in await asyncio.to_thread(s.direct.history, job_id)] == [
        "Submitted",
        "Scheduled",
    ]
