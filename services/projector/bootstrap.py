"""Builds the projector's dependencies from settings; nothing connects at import time."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.projector.projection import Projection
from services.projector.reader import LogReader
from services.projector.relay import Relay
from shared import metrics
from shared.eventstore import AsyncJobStore, JobStore
from shared.eventstore.checkpoints import CheckpointChainError, write_checkpoint
from shared.jobtypes import registry
from shared.leader import Leadership, Wakeup
from shared.messaging import Routes, declare_topology, make_broker
from shared.postgres import connect
from shared.publishing import relay_marks
from shared.redis_view import RedisView
from shared.runtime import instance_id, stop_on_signals, supervise
from shared.settings import (
    AuditSettings,
    BusSettings,
    JobSettings,
    PublishSettings,
    RedisSettings,
    StoreSettings,
)

log = logging.getLogger(__name__)


class ProjectorSettings(BaseSettings):
    """Projector tuning (prefix JOBTRAIL_PROJECTOR_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_PROJECTOR_", extra="ignore")

    poll_s: float = Field(default=1.0, gt=0, description="fallback poll when no NOTIFY arrives")
    relay_batch: int = Field(default=500, ge=1)
    projection_batch: int = Field(default=1000, ge=1)
    prune_s: float = Field(
        default=60.0, ge=0, description="how often expired final jobs leave the list indexes"
    )
    leader_check_s: float = Field(default=1.0, gt=0)


async def checkpoints(url: str, audit: AuditSettings) -> None:
    """Checkpoints the log head every interval (every projector may; a lock serialises them)."""
    if not audit.checkpoint_interval_s:
        return

    def once() -> None:
        with connect(url) as conn:
            mark = write_checkpoint(conn, key=audit.key, file=audit.checkpoint_file)
        if mark is not None:
            log.info("checkpoint at notification %d: %s", mark.notification_id, mark.head.hex())

    while True:
        await asyncio.sleep(audit.checkpoint_interval_s)
        try:
            await asyncio.to_thread(once)
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "checkpoint not written (%s); next try in %.0f s", exc, audit.checkpoint_interval_s
            )
        except CheckpointChainError as exc:  # tampering: keep refusing, loudly, and keep running
            metrics.CHECKPOINTS_REFUSED.inc()
            log.error("checkpoint refused: %s", exc)


async def main() -> None:
    settings = ProjectorSettings()
    store_settings, bus, redis_settings = StoreSettings(), BusSettings(), RedisSettings()
    registry.load(JobSettings().job_modules)
    queues = registry.declared_queues(bus.queues)
    routes = Routes.from_settings(bus)
    broker = make_broker(bus)
    stop = stop_on_signals()
    async with AsyncJobStore(JobStore(store_settings)) as store:
        metrics.watch_store(store.store)
        metrics.serve()
        view = RedisView(redis_settings)
        wakeup = Wakeup(store_settings.postgres_url, store.store.events_table)
        reader = LogReader(store.store)
        publish = PublishSettings()
        relay = Relay(
            store,
            broker,
            routes,
            wakeup.subscribe(),
            batch=settings.relay_batch,
            poll_s=settings.poll_s,
            publish_timeout_s=bus.publish_timeout_s,
            actor=instance_id("projector"),
            # writers publish on commit: the relay is their backstop (shared/publishing.py)
            marks=relay_marks(view.redis, redis_settings, publish, routes),
            grace_s=publish.relay_grace_s,
            check_s=publish.relay_check_s,
        )
        projection = Projection(
            store,
            view,
            wakeup.subscribe(),
            batch=settings.projection_batch,
            poll_s=settings.poll_s,
            prune_s=settings.prune_s,
            reader=reader,
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
                    "checkpoints": lambda: checkpoints(
                        store_settings.postgres_url, AuditSettings()
                    ),
                },
                stop,
            )
        finally:
            await broker.stop()
            await reader.aclose()
            await view.aclose()
    log.info("projector stopped")


def run() -> None:
    asyncio.run(main())
