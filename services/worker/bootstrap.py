"""Wires the worker: its router, the heartbeat and cancel loops, graceful shutdown (shared/
service.py does the steps every service shares; services/worker/handlers.py the behaviour)."""

from __future__ import annotations

import asyncio
import logging

from services.worker import handlers, readiness, subscribers
from services.worker.settings import WorkerSettings
from services.worker.state import WorkerState
from shared.service import Service
from shared.settings import RetrySettings

log = logging.getLogger(__name__)


async def main() -> None:
    settings = WorkerSettings()
    # the broker waits for the grace, then for handed-back jobs to record their outcome
    service = Service(
        "worker", graceful_timeout=settings.shutdown_grace_s + settings.lease_s, signals=True
    )
    queues = settings.queues or service.registry.queues()
    state = WorkerState(
        worker_id=service.instance,
        lease_s=settings.lease_s,
        backoff=RetrySettings().backoff(),
        registry=service.registry,
    )
    async with service:
        store = service.store
        # on stop: jobs in flight finish (or are handed back) before the broker closes, and
        # the publisher then sends nothing more (the relay does)
        service.drain = lambda: handlers.shutdown(service.broker, store, state, settings)
        service.publish_grace_s = 0
        await service.start(subscribers.router(service, state, settings, queues))
        stall_s = service.health.settings.worker_stall_s
        service.health.check(
            "consuming", readiness.consuming(service, state, settings.concurrency, stall_s)
        )
        log.info(
            "worker %s consumes %s with concurrency %d",
            state.worker_id,
            queues,
            settings.concurrency,
        )
        await service.run(
            {
                "heartbeat": lambda: handlers.heartbeat_loop(store, state, settings),
                "cancels": lambda: handlers.cancel_loop(store, state, settings),
            }
        )
    log.info("worker stopped after %d executions", state.executions)


def run() -> None:
    asyncio.run(main())
