"""Builds the scheduler: the event subscriber on every instance, timers and sweeps on the leader."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from faststream.rabbit import RabbitBroker
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis

from services.scheduler import handlers, subscribers
from shared import dead_letters, metrics
from shared.domain import Backoff, Cause
from shared.eventstore import AsyncJobStore, JobStore
from shared.jobtypes import registry
from shared.leader import Leadership
from shared.messaging import Routes, declare_topology, make_broker
from shared.outbox import Outgoing
from shared.publishing import publish_on_commit
from shared.runtime import instance_id, stop_on_signals, supervise
from shared.settings import BusSettings, JobSettings, RedisSettings, RetrySettings, StoreSettings

log = logging.getLogger(__name__)


class SchedulerSettings(BaseSettings):
    """Scheduler tuning (prefix JOBTRAIL_SCHEDULER_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_SCHEDULER_", extra="ignore")

    prefetch: int = Field(default=256, ge=1, description="unacked event messages at once")
    tick_s: float = Field(default=0.5, gt=0, description="how often the leader checks timers")
    sweep_batch: int = Field(default=500, ge=1)
    missed_grace_s: float = Field(
        default=5.0, ge=0, description="a due-now job the bus did not dispatch is swept after this"
    )
    leader_check_s: float = Field(default=1.0, gt=0)
    dispatch_deadline_s: float = Field(
        default=300.0,
        ge=0,
        description="a SCHEDULED job no worker claimed this long gets its work message again "
        "(0: never)",
    )


def build_broker(bus: BusSettings, settings: SchedulerSettings) -> tuple[RabbitBroker, Routes]:
    broker = make_broker(bus, prefetch=settings.prefetch, apply_types=False)
    return broker, Routes.from_settings(bus)


def publisher(
    broker: RabbitBroker, routes: Routes, bus: BusSettings
) -> Callable[[Outgoing], Awaitable[None]]:
    """Publishes a work message again as the relay does: persistent, mandatory, confirmed."""

    async def publish(message: Outgoing) -> None:
        await broker.publish(
            message.body,
            exchange=routes.events,
            routing_key=message.routing_key,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            priority=message.priority,
            content_type="application/json",
            persist=True,
            mandatory=True,
            timeout=bus.publish_timeout_s,
        )

    return publish


async def leader_loop(
    store: AsyncJobStore,
    settings: SchedulerSettings,
    backoff: Backoff,
    actor: str,
    publish: Callable[[Outgoing], Awaitable[None]],
) -> None:
    cause = Cause(actor, correlation_id=f"{actor}/sweep")
    while True:
        scheduled = await handlers.schedule_due(
            store, cause, settings.sweep_batch, settings.missed_grace_s
        )
        expired = await handlers.expire_leases(store, cause, backoff, settings.sweep_batch)
        if settings.dispatch_deadline_s:
            await handlers.redispatch(
                store, publish, settings.sweep_batch, settings.dispatch_deadline_s
            )
        if scheduled or expired:
            log.info("leader: %d timers dispatched, %d leases expired", scheduled, expired)
        if scheduled < settings.sweep_batch and expired < settings.sweep_batch:
            await asyncio.sleep(settings.tick_s)


async def main() -> None:
    settings, bus, store_settings = SchedulerSettings(), BusSettings(), StoreSettings()
    registry.load(JobSettings().job_modules)
    actor = instance_id("scheduler")
    backoff = RetrySettings().backoff()
    broker, routes = build_broker(bus, settings)
    stop = stop_on_signals()
    redis_settings = RedisSettings()
    redis = Redis.from_url(
        redis_settings.redis_url,
        decode_responses=True,
        socket_timeout=redis_settings.redis_timeout_s,
        socket_connect_timeout=redis_settings.redis_timeout_s,
    )
    async with AsyncJobStore(JobStore(store_settings)) as store:
        dead_letters.watch(broker, store)
        metrics.serve()
        subscribers.register(broker, routes, store, actor)
        dead_letters.register_ledger(broker, routes, store)
        on_commit = publish_on_commit(store, broker, routes, bus, redis, redis_settings)
        await broker.connect()
        await declare_topology(broker, routes, registry.declared_queues(bus.queues))
        await broker.start()
        if on_commit is not None:
            on_commit.start()
        lead = Leadership(store_settings.postgres_url, "scheduler", check_s=settings.leader_check_s)
        try:
            await supervise(
                {
                    "leader": lambda: lead.run(
                        lambda: leader_loop(
                            store, settings, backoff, actor, publisher(broker, routes, bus)
                        )
                    )
                },
                stop,
            )
        finally:
            if on_commit is not None:
                await on_commit.aclose()
            await broker.stop()
            await redis.aclose()
    log.info("scheduler stopped")


def run() -> None:
    asyncio.run(main())
