"""The worker's inbound adapter: one subscriber per work queue, prefetch a small multiple of
concurrency, a delivery waiting for a slot handed back after ``slot_wait_s``.

The broker runs without FastDepends (``make_broker(apply_types=False)``): the handler receives
the envelope from ``decoder_of`` (validated once, from the bytes) and reads the delivery from
FastStream's context, which spares every message a resolution of its signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable

from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.message import RabbitMessage

from contracts.messages import JobEventMessage
from services.worker.handlers import Running, WorkerState, claim, execute, record
from shared.domain import Cause
from shared.eventstore import AsyncJobStore
from shared.jobtypes import JobContext
from shared.messaging import Routes, decoder_of, delivery
from shared.retrying import TRANSIENT

log = logging.getLogger(__name__)


def register(
    broker: RabbitBroker,
    routes: Routes,
    queues: list[str],
    store: AsyncJobStore,
    state: WorkerState,
    concurrency: int,
    reporter: Callable[..., Callable[[float, str], None]],
    *,
    prefetch: int | None = None,
    slot_wait_s: float = 60.0,
) -> dict[str, Channel]:
    """Subscribes to each work queue on a channel of its own whose prefetch is ``prefetch``
    (default: ``concurrency``); at most ``concurrency`` jobs run at once, the other deliveries
    wait for a slot unclaimed, for ``slot_wait_s`` at most: then the delivery goes back to the
    queue (any worker with a free slot may take it), so a delivery never sits unacknowledged
    behind long jobs until the broker's consumer timeout closes the channel, nor past the
    scheduler's dispatch deadline. Returns the channels by queue, for ``declare_topology``."""
    slots = asyncio.Semaphore(concurrency)

    async def on_scheduled(message: JobEventMessage) -> None:
        """A job was scheduled on this queue: claim it (a stale or duplicate delivery is
        dropped), run its handler under its timeout, record the outcome fenced by attempt, and
        only then acknowledge the message."""
        msg = delivery(broker)
        try:
            await handle(message, msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A valid work message must never reach the dead-letter queue because of our own
            # failure: that would leave its job SCHEDULED with nothing to run it. Hand it back.
            log.exception("unexpected failure handling %s; returning it", message.data.job_id)
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await msg.nack(requeue=True)

    async def handle(message: JobEventMessage, msg: RabbitMessage) -> None:
        event = message.data
        if event.event_type != "Scheduled" or event.attempt is None:
            return
        try:  # wait for a slot, not forever: see ``slot_wait_s``
            async with asyncio.timeout(slot_wait_s):
                await slots.acquire()
        except TimeoutError:
            await msg.nack(requeue=True)
            return
        try:
            if state.stopping:  # shutting down: hand the un-started delivery back
                await msg.nack(requeue=True)
                return
            cause = Cause.following(
                state.worker_id, message.correlation_id, str(message.message_id)
            )
            try:
                job = await claim(store, state, event.job_id, event.attempt, cause)
            except TRANSIENT as exc:
                log.warning("cannot claim %s now (%r); returning the message", event.job_id, exc)
                await asyncio.sleep(1.0)
                await msg.nack(requeue=True)
                return
            if job is None:
                return
            context = JobContext(
                event.job_id, event.attempt, state.worker_id, report=reporter(event.job_id)
            )
            running = Running(event.job_id, event.attempt, context)
            state.add(running)
            try:
                running.task = asyncio.create_task(execute(state, job, running))
                try:
                    outcome = await asyncio.shield(running.task)
                except asyncio.CancelledError:
                    if running.lease_lost:
                        return  # fenced out: the scheduler already took the job away
                    raise
                try:
                    await record(store, state, job, event.attempt, outcome, cause)
                except TRANSIENT as exc:
                    log.error(
                        "cannot record the outcome of %s (%r); its lease will expire", job.id, exc
                    )
                    await msg.nack(requeue=True)
            finally:
                state.remove(running)
        finally:
            slots.release()

    channels = {queue: Channel(prefetch_count=prefetch or concurrency) for queue in queues}
    decode = decoder_of(JobEventMessage)
    for queue, channel in channels.items():
        broker.subscriber(
            routes.work(queue),
            routes.events,
            channel=channel,
            decoder=decode,
            title=f"worker/{queue}",
            description=inspect.cleandoc(on_scheduled.__doc__ or ""),
        )(on_scheduled)
    return channels
