"""RabbitMQ topology and broker construction, shared by every service.

Exchanges: ``<prefix>.events`` (topic; the relay publishes committed events), ``<prefix>.commands``
(direct; SubmitJob, CancelJob), ``<prefix>.dlx`` (fanout; dead letters) -> ``<prefix>.dlq``.

Queues: the scheduler's and the command queue are quorum queues with a delivery limit, so a
message that keeps failing ends in the dead-letter queue instead of looping. Work queues are
durable classic queues with ``x-max-priority`` (RabbitMQ 3.10's quorum queues have no
priorities), or quorum queues without priorities when ``JOBTRAIL_QUEUE_TYPE=quorum`` (a
cluster: docs/deployment.md); a work message that cannot be decoded is rejected to the
dead-letter exchange at once, and the attempt count that bounds retries lives in the log, not
in the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from faststream.message import StreamMessage
from faststream.rabbit import Channel, ExchangeType, QueueType, RabbitBroker, RabbitExchange
from faststream.rabbit import RabbitQueue as Queue
from faststream.rabbit.message import RabbitMessage
from pydantic import BaseModel

from contracts.names import Topology
from shared.failover import FailoverBroker, connection_class, first_url
from shared.settings import BusSettings

M = TypeVar("M", bound=BaseModel)

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
    queue_type: str = "classic"  # the work queues' (JOBTRAIL_QUEUE_TYPE)

    @classmethod
    def from_settings(cls, settings: BusSettings) -> Routes:
        return cls(
            Topology(settings.topology_prefix),
            settings.delivery_limit,
            settings.hold_s,
            settings.queue_type,
        )

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
        """A classic queue with priorities, or (``queue_type`` quorum, for a cluster) a quorum
        queue replicated on every node, without them (RabbitMQ 3.x refuses x-max-priority on
        a quorum queue). No delivery limit on either: a job's attempts are bounded by the log,
        and a worker hands back deliveries it has no slot for."""
        arguments: dict[str, Any] = {"x-dead-letter-exchange": self.topology.dead_letter_exchange}
        if self.queue_type == "quorum":
            return Queue(
                self.topology.work_queue(queue),
                queue_type=QueueType.QUORUM,
                durable=True,
                arguments=cast(Any, arguments),
                routing_key=Topology.scheduled_key(queue),
            )
        return Queue(
            self.topology.work_queue(queue),
            durable=True,
            arguments=cast(Any, arguments | {"x-max-priority": MAX_PRIORITY}),
            routing_key=Topology.scheduled_key(queue),
        )


def make_broker(
    settings: BusSettings,
    *,
    prefetch: int | None = None,
    graceful_timeout: float = 30.0,
    apply_types: bool = True,
) -> RabbitBroker:
    """A broker whose channels confirm publishes and raise on unroutable (returned) messages;
    ``stop()`` waits up to ``graceful_timeout`` for the messages being handled. A URL naming
    several hosts (a cluster) connects to the first that answers, and on a lost connection to
    the next (shared/failover.py).

    ``apply_types=False`` turns FastDepends off for every subscriber of the broker: a handler
    then receives what its ``decoder`` returns (see ``decoder_of``) and nothing else, and reads
    the delivery itself with ``delivery``. That spares each message FastDepends' resolution of
    the handler's signature, whose context lookups run in a thread of their own."""
    failover = connection_class(settings.amqp_url)
    options: dict[str, Any] = {"connection_class": failover} if failover else {}
    broker = (FailoverBroker if failover else RabbitBroker)(
        first_url(settings.amqp_url),
        default_channel=Channel(
            prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True
        ),
        graceful_timeout=graceful_timeout,
        apply_types=apply_types,
        fail_fast=True,
        log_level=logging.DEBUG,  # a line per message costs more Python than the message itself
        description="jobtrail: event-sourced, auditable job processing",
        **options,
    )
    return broker


def decoder_of(model: type[M]) -> Callable[[StreamMessage[Any]], Awaitable[M]]:
    """A subscriber's decoder that validates the body as ``model`` in one pass, with pydantic's
    JSON parser straight from the bytes (instead of ``json.loads`` and then a validation of the
    dict). A body that does not fit raises pydantic's ValidationError, as before: the delivery
    is rejected to the dead letters."""
    validate = model.model_validate_json

    async def decode(message: StreamMessage[Any]) -> M:
        return validate(message.body)

    return decode


def delivery(broker: RabbitBroker) -> RabbitMessage:
    """The delivery being handled (FastStream's context), for a handler without FastDepends."""
    return cast(RabbitMessage, broker.context.get_local("message"))


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


async def declare_topology(
    broker: RabbitBroker,
    routes: Routes,
    queues: list[str],
    *,
    channels: Mapping[str, Channel] | None = None,
) -> None:
    """Declares every exchange, queue and binding (idempotent), so no committed event is unroutable
    just because its consumer has not started yet.

    ``channels`` gives, by queue name, the channel each work queue is consumed on (the
    worker's, whose prefetch is its concurrency). FastStream keeps a declared queue with the
    channel that declared it, and a subscriber of that queue then consumes on that channel:
    declared here on the default one (no prefetch), a work queue would push its whole backlog
    to the first worker."""
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
        channel = (channels or {}).get(work.name)
        declared = await broker.config.declarer.declare_queue(work, channel=channel)
        await declared.bind(events, routing_key=work.routing_key)
