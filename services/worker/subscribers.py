"""The worker's inbound adapter: a router with one subscriber per work queue, each consumed on a
channel of its own whose prefetch is a small multiple of concurrency, a delivery waiting for a
slot handed back after ``slot_wait_s``.

The service's broker runs without FastDepends (``make_broker(apply_types=False)``): the handler
receives the envelope from ``decoder_of`` (validated once, from the bytes) and reads the delivery
from FastStream's context, which spares every message a resolution of its signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time

from faststream.rabbit import Channel, RabbitRouter
from faststream.rabbit.message import RabbitMessage

from contracts.messages import JobEventMessage
from services.worker.handlers import claim, execute, progress_reporter, record
from services.worker.settings import WorkerSettings
from services.worker.state import Running, WorkerState
from shared import logs, tracing
from shared.domain import Cause
from shared.jobtypes import JobContext
from shared.messaging import decoder_of, delivery
from shared.retrying import TRANSIENT
from shared.service import Service

log = logging.getLogger(__name__)


def router(
    service: Service, state: WorkerState, settings: WorkerSettings, queues: list[str]
) -> RabbitRouter:
    """Subscribes to each of ``queues`` on a channel of its own whose prefetch is concurrency x
    ``prefetch_multiplier``; at most ``concurrency`` jobs run at once, the other deliveries wait
    for a slot unclaimed, for ``slot_wait_s`` at most: then the delivery goes back to the queue
    (any worker with a free slot may take it), so a delivery never sits unacknowledged behind
    long jobs until the broker's consumer timeout closes the channel, nor past the scheduler's
    dispatch deadline. ``Service.start`` declares each work queue on its subscriber's channel."""
    broker = service.broker
    slots = asyncio.Semaphore(settings.concurrency)
    slot_wait_s = settings.slot_wait_s
    reporter = progress_reporter(service.view)

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
        state.took_at = time.monotonic()  # consuming: see services/worker/readiness.py
        try:
            if state.stopping:  # shutting down: hand the un-started delivery back
                await msg.nack(requeue=True)
                return
            cause = Cause.following(
                state.worker_id, message.correlation_id, str(message.message_id)
            )
            with (
                logs.job(event.job_id, cause.correlation_id),
                tracing.consumer(
                    "worker run", msg.headers, job_id=event.job_id, attempt=event.attempt
                ),
            ):
                await attempt(message, msg, tracing.traced(cause))
        finally:
            slots.release()

    async def attempt(message: JobEventMessage, msg: RabbitMessage, cause: Cause) -> None:
        """Claims, runs and records one attempt (in the worker's span, when tracing)."""
        event = message.data
        assert event.attempt is not None
        store = service.store
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
                with tracing.span("worker record outcome", job_id=job.id):
                    await record(store, state, job, event.attempt, outcome, tracing.traced(cause))
            except TRANSIENT as exc:
                log.error(
                    "cannot record the outcome of %s (%r); its lease will expire", job.id, exc
                )
                await msg.nack(requeue=True)
        finally:
            state.remove(running)

    router = RabbitRouter()
    prefetch = settings.concurrency * settings.prefetch_multiplier
    decode = decoder_of(JobEventMessage)
    for queue in queues:
        router.subscriber(
            service.routes.work(queue),
            service.routes.events,
            channel=Channel(prefetch_count=prefetch),
            decoder=decode,
            title=f"worker/{queue}",
            description=inspect.cleandoc(on_scheduled.__doc__ or ""),
        )(on_scheduled)
    return router
