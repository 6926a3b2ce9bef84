"""Wires the projector: the relay and the projection (each on the leader of its lock), their
readiness (services/projector/monitor.py) and the checkpoints (shared/service.py does the
steps every service shares). It consumes nothing."""

from __future__ import annotations

import asyncio
import logging

from services.projector.handlers import checkpoints
from services.projector.monitor import Monitor
from services.projector.projection import Projection
from services.projector.reader import LogReader
from services.projector.relay import Relay
from services.projector.settings import ProjectorSettings
from shared.leader import Leadership, Wakeup
from shared.publishing import relay_marks
from shared.service import Service
from shared.settings import AuditSettings, PublishSettings

log = logging.getLogger(__name__)


async def main() -> None:
    settings = ProjectorSettings()
    service = Service("projector", signals=True)
    url = service.store_settings.postgres_url
    async with service:
        store = service.store
        wakeup = Wakeup(url, store.store.events_table)
        reader = LogReader(store.store)
        service.on_close(reader.aclose)
        publish = PublishSettings()
        relay = Relay(
            store,
            service.broker,
            service.routes,
            wakeup.subscribe(),
            batch=settings.relay_batch,
            poll_s=settings.poll_s,
            publish_timeout_s=service.bus.publish_timeout_s,
            actor=service.instance,
            # writers publish on commit: the relay is their backstop (shared/publishing.py)
            marks=relay_marks(service.view.redis, service.redis_settings, publish, service.routes),
            grace_s=publish.relay_grace_s,
            check_s=publish.relay_check_s,
        )
        projection = Projection(
            store,
            service.view,
            wakeup.subscribe(),
            batch=settings.projection_batch,
            poll_s=settings.poll_s,
            prune_s=settings.prune_s,
            reader=reader,
        )
        Monitor(store, service.view, relay.progress, projection.progress).register(service.health)
        await service.start(publish=False)  # the relay publishes
        relay_lead = Leadership(url, "relay", check_s=settings.leader_check_s)
        projection_lead = Leadership(url, "projection", check_s=settings.leader_check_s)
        await service.run(
            {
                "wakeup": wakeup.run,
                "relay": lambda: relay_lead.run(relay.run),
                "projection": lambda: projection_lead.run(projection.run),
                "checkpoints": lambda: checkpoints(url, AuditSettings()),
            }
        )
    log.info("projector stopped")


def run() -> None:
    asyncio.run(main())
