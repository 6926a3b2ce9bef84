"""Wires the scheduler: its router on every instance, the leader loop on the one holding the
``scheduler`` lock (shared/service.py does the steps every service shares)."""

from __future__ import annotations

import asyncio
import logging

from services.scheduler import handlers, subscribers
from services.scheduler.settings import SchedulerSettings
from shared.leader import Leadership
from shared.service import Service
from shared.settings import RetrySettings

log = logging.getLogger(__name__)


async def main() -> None:
    settings = SchedulerSettings()
    backoff = RetrySettings().backoff()
    service = Service("scheduler", prefetch=settings.prefetch, signals=True)
    async with service:
        await service.start(subscribers.router(service))
        lead = Leadership(
            service.store_settings.postgres_url, "scheduler", check_s=settings.leader_check_s
        )
        resend = handlers.resender(service.broker, service.routes, service.bus)
        sweeps = handlers.Sweeps()
        bound_s = service.health.settings.sweep_stall_ticks * settings.tick_s
        service.health.check("sweeps", sweeps.stalled(bound_s))
        await service.run(
            {
                "leader": lambda: lead.run(
                    lambda: handlers.leader_loop(
                        service.store, settings, backoff, service.instance, resend, sweeps
                    )
                )
            }
        )
    log.info("scheduler stopped")


def run() -> None:
    asyncio.run(main())
