"""``jobtrail dlq``: dead letters; list them, and republish the valid ones to where they were going.

``list`` and ``republish`` read RabbitMQ's dead-letter queue directly; ``recorded`` and
``quarantined`` ask the API for what the consumers and the relay recorded in PostgreSQL.

Republishing is idempotent: every consumer decides against the log under the job's lock, so a
message that already had its effect is dropped when it arrives again. A message that still does
not validate against its contract stays in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import aio_pika
import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from contracts.messages import CancelJobMessage, JobEventMessage, SubmitJobMessage
from contracts.names import Topology
from services.cli.client import call
from services.cli.console import console
from services.cli.render import dead_letter_table
from shared import failover
from shared.dead_letters import REPLAYS_HEADER, job_id_in, replays_in
from shared.settings import BusSettings

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
    connection = await failover.connect(amqp_url)
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


async def republish(amqp_url: str, topology: Topology, message_id: str | None) -> tuple[int, int]:
    """Republishes valid dead letters (all, or the one with ``message_id``) to their exchange and
    routing key, confirmed, then removes them; returns (replayed, left)."""
    connection = await failover.connect(amqp_url)
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


dlq_app = typer.Typer(help="Dead letters: list, and republish the valid ones (idempotent).")


def _bus() -> tuple[str, Topology]:
    bus = BusSettings()
    return bus.amqp_url, Topology(bus.topology_prefix)


@dlq_app.command(name="list")
def dlq_list(limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50) -> None:
    """Shows dead letters (they stay in the queue): origin, reason, job, and what is wrong."""
    url, topology = _bus()
    letters = asyncio.run(list_dead_letters(url, topology, limit))
    table = Table(title=f"{len(letters)} dead letter(s) in {topology.dead_letter_queue}")
    columns = ("message_id", "job_id", "from", "reason", "valid", "problem")
    for column in columns:
        table.add_column(column, overflow="fold")
    for letter in letters:
        row = letter.row()
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)


@dlq_app.command(name="recorded")
def dlq_recorded(
    job: Annotated[str | None, typer.Option(help="only dead letters naming this job")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Shows the dead letters consumers recorded in PostgreSQL (newest first), via the API."""
    letters = call(lambda client: client.dead_letters(job, limit))
    console.print(dead_letter_table(letters, f"{len(letters)} recorded dead letter(s)"))


@dlq_app.command(name="quarantined")
def dlq_quarantined(
    job: Annotated[str | None, typer.Option(help="only events of this job")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Shows the events of the log the relay or the projection quarantined (newest first)."""
    rows = call(lambda client: client.quarantined(job, limit))
    table = Table(title=f"{len(rows)} quarantined event(s)")
    for column in ("at", "stage", "notification", "job_id", "version", "event", "action", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["at"][:23],
            row["stage"],
            str(row["notification_id"]),
            str(row["job_id"] or "-"),
            str(row["version"] or "-"),
            row["event_type"],
            row["action"],
            row["error"][:160],
        )
    console.print(table)


def dlq_republish(
    message_id: Annotated[str | None, typer.Option(help="only this message")] = None,
) -> None:
    """Republishes valid dead letters to where they were going; invalid ones stay."""
    url, topology = _bus()
    sent, left = asyncio.run(republish(url, topology, message_id))
    console.print(f"republished {sent}; left in the dead-letter queue: {left}")


dlq_app.command(name="republish")(dlq_republish)
dlq_app.command(name="replay", hidden=True, help="Old name of `dlq republish`.")(dlq_republish)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
