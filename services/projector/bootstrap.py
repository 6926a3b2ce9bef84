"""Builds the projector's dependencies from settings; nothing connects at import time."""

from __future__ import annotations

import asyncio
import logging

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.projector.projection import Projection
from services.projector.relay import Relay
from shared import metrics
from shared.eventstore import AsyncJobStore, JobStore
from shared.jobtypes import registry
from shared.leader import Leadership, Wakeup
from shared.messaging import Routes, declare_topology, make_broker
from shared.redis_view import RedisView
from shared.runtime import stop_on_signals, supervise
from shared.settings import BusSettings, JobSettings, RedisSettings, StoreSettings

log = logging.getLogger(__name__)


class ProjectorSettings(BaseSettings):
    """Projector tuning (prefix JOBTRAIL_PROJECTOR_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_PROJECTOR_", extra="ignore")

    poll_s: float = Field(default=1.0, gt=0, description="fallback poll when no NOTIFY arrives")
    relay_batch: int = Field(default=500, ge=1)
    projection_batch: int = Field(default=1000, ge=1)
    leader_check_s: float = Field(default=1.0, gt=0)


async def main() -> None:
    settings = ProjectorSettings()
    store_settings, bus, redis_settings = StoreSettings(), BusSettings(), RedisSettings()
    registry.load(JobSettings().job_modules)
    queues = sorted(set(bus.queues) | set(registry.queues()))
    routes = Routes.from_settings(bus)
    broker = make_broker(bus)
    stop = stop_on_signals()
    async with AsyncJobStore(JobStore(store_settings)) as store:
        metrics.watch_store(store.store)
        metrics.serve()
        view = RedisView(redis_settings)
        wakeup = Wakeup(store_settings.postgres_url, store.store.events_table)
        relay = Relay(
            store,
            broker,
            routes,
            wakeup.subscribe(),
            batch=settings.relay_batch,
            poll_s=settings.poll_s,
            publish_timeout_s=bus.publish_timeout_s,
        )
        projection = Projection(
            store, view, wakeup.subscribe(), batch=settings.projection_batch, poll_s=settings.poll_s
        )
        await broker.connect()
        await declare_topology(broker, routes, queues)
        await broker.start()
        relay_lead = Leadership(
            store_settings.postgres_url, "relay", check_s=settings.leader_check_s
        )
        projection_lead = Leadership(
            store_settings.postgres_url, "projection", check_s=settings.leader_check_s
        )
        try:
            await supervise(
                {
                    "wakeup": wakeup.run,
                    "relay": lambda: relay_lead.run(relay.run),
                    "projection": lambda: projection_lead.run(projection.run),
                },
                stop,
            )
        finally:
            await broker.stop()
            await view.aclose()
    log.info("projector stopped")


def run() -> None:
    asyncio.run(main())
