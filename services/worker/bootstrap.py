"""Builds the worker: its subscribers, the heartbeat, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from uuid import UUID

from faststream.rabbit import RabbitBroker
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.exceptions import RedisError

from services.worker import handlers, subscribers
from shared import dead_letters, metrics
from shared.eventstore import AsyncJobStore, JobStore
from shared.jobtypes import registry
from shared.messaging import Routes, declare_topology, make_broker
from shared.publishing import publish_on_commit
from shared.redis_view import RedisView
from shared.runtime import instance_id, stop_on_signals, supervise
from shared.settings import (
    BusSettings,
    CommaList,
    JobSettings,
    RedisSettings,
    RetrySettings,
    StoreSettings,
)

log = logging.getLogger(__name__)


class WorkerSettings(BaseSettings):
    """Worker tuning (prefix JOBTRAIL_WORKER_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_WORKER_", extra="ignore")

    concurrency: int = Field(default=32, ge=1, le=1024, description="jobs run at once")
    prefetch_multiplier: int = Field(
        default=4,
        ge=1,
        le=64,
        description="each work queue's prefetch is concurrency x this: deliveries waiting for a "
        "slot hide the broker's round trip after each ack (Celery's default is 4 too)",
    )
    slot_wait_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="a delivery that waited this long for a free slot goes back to the queue "
        "(keep it well under RabbitMQ's consumer_timeout and the dispatch deadline)",
    )
    queues: CommaList = Field(default_factory=list, description="empty: every job type's queue")
    lease_s: float = Field(default=30.0, gt=0, description="a silent worker loses a job after")
    heartbeat_s: float = Field(default=0.0, ge=0, description="0: a third of lease_s")
    cancel_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="an async handler still running this long after a cancel request is cancelled",
    )
    cancel_poll_s: float = Field(default=1.0, gt=0, description="how often cancels are looked up")
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, how long jobs in flight may run on to finish (their leases are "
        "renewed meanwhile); those still running then are handed back as a failed attempt "
        "retried at once elsewhere. Keep it below the orchestrator's kill timeout",
    )


async def heartbeat_loop(
    store: AsyncJobStore, state: handlers.WorkerState, settings: WorkerSettings
) -> None:
    """Renews leases at once, then every third of the lease (a beat with nothing running does
    no I/O, so starting with one costs nothing)."""
    every = settings.heartbeat_s or settings.lease_s / 3
    while True:
        try:
            await handlers.heartbeat(store, state)
        except Exception as exc:  # the database may be away; the lease is what protects us
            log.warning("heartbeat failed: %r", exc)
        await asyncio.sleep(every)


async def cancel_loop(
    store: AsyncJobStore, state: handlers.WorkerState, settings: WorkerSettings
) -> None:
    while True:
        await asyncio.sleep(settings.cancel_poll_s)
        try:
            await handlers.poll_cancels(store, state, settings.cancel_grace_s)
        except Exception as exc:
            log.warning("cancel poll failed: %r", exc)


async def shutdown(
    broker: RabbitBroker,
    store: AsyncJobStore,
    state: handlers.WorkerState,
    settings: WorkerSettings,
) -> None:
    """Stops taking work and lets the jobs in flight record their outcomes while their leases
    are still renewed and cancels still polled: a lease that lapsed during the wait would let the
    scheduler record LeaseExpired and run the job again elsewhere while it finishes here.

    After ``shutdown_grace_s``, the jobs still running are handed back: their handlers are
    stopped and each attempt is recorded as failed ("WorkerShutdown") with no backoff, so another
    worker retries it at once. That is preferred to letting the lease expire, which would leave
    the job idle for up to a lease and then retry it after a backoff; either way the attempt
    counts. Only then do the heartbeat and cancel loops stop, and the broker closes.
    """
    state.stopping = True  # deliveries waiting for a slot go back to the queue
    loops = [
        asyncio.create_task(heartbeat_loop(store, state, settings)),
        asyncio.create_task(cancel_loop(store, state, settings)),
    ]
    # stops consuming at once, then waits (bounded) for the handlers running now
    stopping = asyncio.create_task(broker.stop())
    try:
        done, _ = await asyncio.wait({stopping}, timeout=settings.shutdown_grace_s)
        if not done:
            handed = handlers.hand_back(state)
            log.warning(
                "%d jobs still running after %.0f s: handed back", handed, settings.shutdown_grace_s
            )
        await stopping
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


def progress_reporter(view: RedisView) -> Callable[..., Callable[[float, str], None]]:
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def write(job_id: UUID, fraction: float, message: str) -> None:
        try:
            await view.set_progress(job_id, fraction, message)
        except (RedisError, OSError) as exc:
            log.debug("progress of %s not written: %r", job_id, exc)

    def reporter(job_id: UUID) -> Callable[[float, str], None]:
        def report(fraction: float, message: str) -> None:
            def schedule() -> None:
                task = loop.create_task(write(job_id, fraction, message))
                pending.add(task)
                task.add_done_callback(pending.discard)

            loop.call_soon_threadsafe(schedule)

        return report

    return reporter


async def main() -> None:
    settings, bus, store_settings = WorkerSettings(), BusSettings(), StoreSettings()
    registry.load(JobSettings().job_modules)
    queues = settings.queues or registry.queues()
    worker_id = instance_id("worker")
    state = handlers.WorkerState(
        worker_id=worker_id,
        lease_s=settings.lease_s,
        backoff=RetrySettings().backoff(),
        registry=registry,
    )
    routes = Routes.from_settings(bus)
    # the broker waits for the grace, then for handed-back jobs to record their outcome
    broker = make_broker(
        bus, graceful_timeout=settings.shutdown_grace_s + settings.lease_s, apply_types=False
    )
    stop = stop_on_signals()
    redis_settings = RedisSettings()
    view = RedisView(redis_settings)
    async with AsyncJobStore(JobStore(store_settings)) as store:
        dead_letters.watch(broker, store)
        metrics.serve()
        channels = subscribers.register(
            broker,
            routes,
            queues,
            store,
            state,
            settings.concurrency,
            progress_reporter(view),
            prefetch=settings.concurrency * settings.prefetch_multiplier,
            slot_wait_s=settings.slot_wait_s,
        )
        publisher = publish_on_commit(store, broker, routes, bus, view.redis, redis_settings)
        await broker.connect()
        declared = registry.declared_queues(bus.queues)
        await declare_topology(broker, routes, declared, channels=channels)
        await broker.start()
        if publisher is not None:
            publisher.start()
        log.info(
            "worker %s consumes %s with concurrency %d", worker_id, queues, settings.concurrency
        )
        try:
            await supervise(
                {
                    "heartbeat": lambda: heartbeat_loop(store, state, settings),
                    "cancels": lambda: cancel_loop(store, state, settings),
                },
                stop,
            )
        finally:
            await shutdown(broker, store, state, settings)
            if publisher is not None:  # what it could not send now, the relay sends
                await publisher.aclose(timeout_s=0)
            await view.aclose()
    log.info("worker stopped after %d executions", state.executions)


def run() -> None:
    asyncio.run(main())
