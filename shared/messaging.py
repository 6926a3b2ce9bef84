"""RabbitMQ topology and broker construction, shared by every service.

Exchanges: ``<prefix>.events`` (topic; the relay publishes committed events), ``<prefix>.commands``
(direct; SubmitJob, CancelJob), ``<prefix>.dlx`` (fanout; dead letters) -> ``<prefix>.dlq``.

Queues: the scheduler's and the command queue are quorum queues with a delivery limit, so a
message that keeps failing ends in the dead-letter queue instead of looping. Work queues are
durable classic queues with ``x-max-priority`` (RabbitMQ 3.10's quorum queues have no
priorities); a work message that cannot be decoded is rejected to the dead-letter exchange at
once, and the attempt count that bounds retries lives in the log, not in the broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from faststream.rabbit import Channel, ExchangeType, QueueType, RabbitBroker, RabbitExchange
from faststream.rabbit import RabbitQueue as Queue

from contracts.names import Topology
from shared.settings import BusSettings

SCHEDULER_KEYS = tuple(
    Topology.event_key(kind)
    for kind in ("submitted", "attempt_failed", "lease_expired", "requeued")
)
MAX_PRIORITY = 9


@dataclass(frozen=True)
class Routes:
    """The exchanges and queues of one deployment (one topology prefix)."""

    topology: Topology
    delivery_limit: int = 5
    hold_s: float = 600.0  # how long a consumer holds a delivery through an outage, then parks it

    @classmethod
    def from_settings(cls, settings: BusSettings) -> Routes:
        return cls(Topology(settings.topology_prefix), settings.delivery_limit, settings.hold_s)

    @property
    def events(self) -> RabbitExchange:
        return RabbitExchange(self.topology.events_exchange, type=ExchangeType.TOPIC, durable=True)

    @property
    def commands(self) -> RabbitExchange:
        return RabbitExchange(
            self.topology.commands_exchange, type=ExchangeType.DIRECT, durable=True
        )

    @property
    def dlx(self) -> RabbitExchange:
        return RabbitExchange(
            self.topology.dead_letter_exchange, type=ExchangeType.FANOUT, durable=True
        )

    @property
    def dlq(self) -> Queue:
        return Queue(self.topology.dead_letter_queue, queue_type=QueueType.QUORUM, durable=True)

    @property
    def ledger(self) -> Queue:
        return Queue(self.topology.dead_letter_ledger, queue_type=QueueType.QUORUM, durable=True)

    def _limited(self, name: str, routing_key: str = "") -> Queue:
        arguments: dict[str, Any] = {
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.topology.dead_letter_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        return Queue(
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments=cast(Any, arguments),
            routing_key=routing_key,
        )

    @property
    def scheduler(self) -> Queue:
        return self._limited(self.topology.scheduler_queue, SCHEDULER_KEYS[0])

    @property
    def submit(self) -> Queue:
        return self._limited(self.topology.submit_queue, Topology.SUBMIT_KEY)

    @property
    def cancel(self) -> Queue:
        return self._limited(self.topology.cancel_queue, Topology.CANCEL_KEY)

    def work(self, queue: str) -> Queue:
        return Queue(
            self.topology.work_queue(queue),
            durable=True,
            arguments=cast(
                Any,
                {
                    "x-max-priority": MAX_PRIORITY,
                    "x-dead-letter-exchange": self.topology.dead_letter_exchange,
                },
            ),
            routing_key=Topology.scheduled_key(queue),
        )


def make_broker(
    settings: BusSettings, *, prefetch: int | None = None, graceful_timeout: float = 30.0
) -> RabbitBroker:
    """A broker whose channels confirm publishes and raise on unroutable (returned) messages;
    ``stop()`` waits up to ``graceful_timeout`` for the messages being handled."""
    return RabbitBroker(
        settings.amqp_url,
        default_channel=Channel(
            prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True
        ),
        graceful_timeout=graceful_timeout,
        fail_fast=True,
        log_level=logging.DEBUG,  # a line per message costs more Python than the message itself
        description="jobtrail: event-sourced, auditable job processing",
    )


PARKED_HEADER = "x-jobtrail-parked"


async def park(broker: RabbitBroker, message: Any, queue: str, *, timeout_s: float = 10.0) -> None:
    """Puts a copy of a delivered aio-pika ``message`` at the back of ``queue`` (the default
    exchange routes by queue name; persistent, mandatory, confirmed): same body, ids and
    headers, with its delivery count left behind and ``x-jobtrail-parked`` counting parks.
    The caller then acknowledges the delivery (see shared/retrying.py ``hold``)."""
    headers = {
        key: value
        for key, value in (getattr(message, "headers", None) or {}).items()
        if key != "x-delivery-count"
    }
    parked = headers.get(PARKED_HEADER)
    headers[PARKED_HEADER] = (parked if isinstance(parked, int) else 0) + 1
    await broker.publish(
        bytes(message.body),
        queue=queue,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        priority=message.priority,
        message_type=message.type,
        persist=True,
        mandatory=True,
        timeout=timeout_s,
    )


async def declare_topology(broker: RabbitBroker, routes: Routes, queues: list[str]) -> None:
    """Declares every exchange, queue and binding (idempotent), so no committed event is unroutable
    just because its consumer has not started yet."""
    events = await broker.declare_exchange(routes.events)
    commands = await broker.declare_exchange(routes.commands)
    dlx = await broker.declare_exchange(routes.dlx)
    dlq = await broker.declare_queue(routes.dlq)
    await dlq.bind(dlx, routing_key="")
    ledger = await broker.declare_queue(routes.ledger)
    await ledger.bind(dlx, routing_key="")
    scheduler = await broker.declare_queue(routes.scheduler)
    for key in SCHEDULER_KEYS:
        await scheduler.bind(events, routing_key=key)
    for queue in (routes.submit, routes.cancel):
        declared = await broker.declare_queue(queue)
        await declared.bind(commands, routing_key=queue.routing_key)
    for name in queues:
        work = routes.work(name)
        declared = await broker.declare_queue(work)
        await declared.bind(events, routing_key=work.routing_key)
