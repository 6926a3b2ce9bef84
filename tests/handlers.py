"""What the handler tests share: a service over the real store, its routers run in memory.

In the style of cosmicpython's service-layer tests: a test sends one message to a service's real
router (FastStream's ``TestRabbitBroker``, no RabbitMQ: it does not model acks, prefetch or
dead-lettering, which tests/integration/test_dead_letters.py and test_worker_prefetch.py prove on
a real broker) and asserts on what the real store then holds (PostgreSQL).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from faststream.rabbit import RabbitBroker, RabbitRouter, TestRabbitBroker

from shared.eventstore import JobStore
from shared.outbox import Outgoing, to_message
from shared.service import Service
from shared.settings import BusSettings, RedisSettings, StoreSettings


def service_for(name: str, postgres_url: str, redis_url: str, amqp_url: str, **kw: Any) -> Service:
    """A service of ``name`` over this session's database, on a topology and Redis prefix of its
    own (nothing is declared: the broker runs in memory)."""
    tag = f"jt-h-{uuid.uuid4().hex[:6]}"
    return Service(
        name,
        serve_health=False,
        bus=BusSettings(amqp_url=amqp_url, topology_prefix=tag),
        store=StoreSettings(postgres_url=postgres_url, postgres_pool_size=4),
        redis=RedisSettings(redis_url=redis_url, redis_prefix=tag),
        job_modules=["examples.jobs"],
        **kw,
    )


def forget_dead_letters(postgres_url: str, service: Service) -> None:
    """Deletes the dead letters recorded from the service's queues (the table is the session's:
    other tests count theirs in it)."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM jobtrail_dead_letters WHERE queue LIKE %s",
            [service.routes.topology.prefix + ".%"],
        )


@asynccontextmanager
async def in_memory(
    service: Service, *routers: Callable[[Service], RabbitRouter] | RabbitRouter
) -> AsyncIterator[RabbitBroker]:
    """The service open (real store) with its routers included, its broker in memory."""
    async with service:
        for router in routers:
            service.broker.include_router(
                router if isinstance(router, RabbitRouter) else router(service)
            )
        async with TestRabbitBroker(service.broker) as broker:
            yield broker


def last_message(store: JobStore, job_id: uuid.UUID) -> Outgoing:
    """The bus message of the job's last event, as its writer (or the relay) publishes it."""
    message = to_message(1, store.history(job_id)[-1])
    assert message is not None, "the job's last event is not one a service consumes"
    return message


async def deliver(
    broker: RabbitBroker, message: Outgoing, exchange: Any, routing_key: str | None = None
) -> None:
    """Publishes an outbox message as the writers do (same body, ids, key and priority).

    ``routing_key``: the in-memory broker routes by the one key a subscriber's queue declares
    (the scheduler's queue is bound to four by ``declare_topology``): pass that one."""
    await broker.publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key or message.routing_key,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        priority=message.priority,
        content_type="application/json",
    )
