"""Dead letters: list them, and replay the ones that are valid to where they were going.

Replay is idempotent: every consumer decides against the log under the job's lock, so a message
that already had its effect is dropped when it arrives again. A message that still does not
validate against its contract stays in the dead-letter queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from pydantic import BaseModel, ValidationError

from contracts.messages import CancelJobMessage, JobEventMessage, SubmitJobMessage
from contracts.names import Topology
from shared.dead_letters import REPLAYS_HEADER, job_id_in, replays_in

CONTRACTS: dict[str, type[BaseModel]] = {
    "job.submit": SubmitJobMessage,
    "job.cancel": CancelJobMessage,
}


@dataclass
class DeadLetter:
    message_id: str | None
    queue: str
    exchange: str
    routing_key: str
    reason: str
    count: int
    body: bytes
    job_id: str | None
    valid: bool
    problem: str | None

    def row(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "job_id": self.job_id,
            "from": f"{self.exchange}/{self.routing_key} -> {self.queue}",
            "reason": f"{self.reason} x{self.count}",
            "valid": self.valid,
            "problem": self.problem,
            "body": self.body[:120].decode(errors="replace"),
        }


def inspect(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    """Where a dead letter came from (its x-death header), and whether its contract holds."""
    deaths: list[dict[str, Any]] = list(message.headers.get("x-death") or [])  # type: ignore[arg-type]
    first = deaths[-1] if deaths else {}
    keys = first.get("routing-keys") or [message.routing_key or ""]
    routing_key = str(keys[0])
    model = CONTRACTS.get(routing_key, JobEventMessage)
    problem = None
    try:
        model.model_validate_json(message.body)
    except ValidationError as exc:
        problem = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
        )
    named = job_id_in(message.body)
    job_id = str(named) if named else None
    return DeadLetter(
        message_id=message.message_id,
        queue=str(first.get("queue", "")),
        exchange=str(first.get("exchange", "")),
        routing_key=routing_key,
        reason=str(first.get("reason", "")),
        count=int(first.get("count", 1) or 1),
        body=message.body,
        job_id=job_id,
        valid=problem is None,
        problem=problem,
    )


async def list_dead_letters(amqp_url: str, topology: Topology, limit: int) -> list[DeadLetter]:
    """Reads up to ``limit`` dead letters without removing any (they return on close)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.dead_letter_queue, ensure=True)
        letters = []
        for _ in range(limit):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letters.append(inspect(message))
        return letters  # closing the channel hands every unacked message back, in order


async def replay(amqp_url: str, topology: Topology, message_id: str | None) -> tuple[int, int]:
    """Republishes valid dead letters (all, or the one with ``message_id``) to their exchange and
    routing key, confirmed, then removes them; returns (replayed, left)."""
    connection = await aio_pika.connect(amqp_url)
    replayed = left = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.get_queue(topology.dead_letter_queue, ensure=True)
        depth = (await queue.declare()).message_count or 0
        for _ in range(depth):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letter = inspect(message)
            if not letter.valid or (message_id and letter.message_id != message_id):
                left += 1
                continue  # stays unacked, returns to the queue on close
            exchange = await channel.get_exchange(letter.exchange, ensure=True)
            headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
            # x-death goes, so a later death counts from 1 again: the replay count keeps the
            # dead-letter record of that death apart from this one (shared/dead_letters.py)
            headers[REPLAYS_HEADER] = replays_in(message) + 1
            await exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    content_type=message.content_type,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    priority=message.priority,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=letter.routing_key,
                mandatory=True,
            )
            await message.ack()
            replayed += 1
    return replayed, left
