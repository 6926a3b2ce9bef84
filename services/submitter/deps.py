"""What the submitter's adapters need, built once per process by bootstrap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from faststream.rabbit import RabbitBroker

from services.submitter.admission import PendingCap, Waiters
from shared.eventstore import AsyncJobStore
from shared.jobtypes import Registry
from shared.keys import KeyRing, Principal
from shared.redis_view import RedisView

READY_CACHE_S = 1.0
"""How long a readiness check's answer is reused (``Deps.check``)."""


@dataclass
class Deps:
    store: AsyncJobStore
    view: RedisView
    registry: Registry
    queues: set[str]
    broker: RabbitBroker | None = None
    instance: str = "submitter"
    keys: KeyRing = field(default_factory=KeyRing)
    anonymous: Principal | None = None
    """Who a request without a key acts as: nobody (401) unless JOBTRAIL_AUTH_ANONYMOUS is on."""
    rate_limit: Callable[[str], int | None] | None = None
    """A key id's wait in seconds when it is over its rate, else None (None: no limit)."""
    pending_cap: PendingCap | None = None
    """The per-tenant cap on jobs not yet final (None: no cap)."""
    waiters: Waiters = field(default_factory=Waiters)
    """The long polls of ``GET /v1/jobs/{id}/wait`` waiting now, and their bounds."""
    _checked: tuple[float, dict[str, str]] | None = field(default=None, init=False, repr=False)
    _checking: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def check(self) -> dict[str, str]:
        """The last readiness check when it is under ``READY_CACHE_S`` old, else a new one;
        probes arriving together share one check. ``/readyz`` needs no key: however often it is
        called, the submitter pings its three servers at most once a second."""
        async with self._checking:
            if self._checked is not None and time.monotonic() - self._checked[0] < READY_CACHE_S:
                return self._checked[1]
            results = await self._probe()
            self._checked = (time.monotonic(), results)
            return results

    async def _probe(self) -> dict[str, str]:
        """Pings PostgreSQL, RabbitMQ and Redis, each within two seconds."""

        async def postgres() -> None:
            await self.store.run_sync(self.store.store.max_notification_id)

        async def rabbitmq() -> None:
            if self.broker is None or not await self.broker.ping(timeout=2.0):
                raise ConnectionError("RabbitMQ does not answer")

        async def redis() -> None:
            await self.view.redis.ping()

        results: dict[str, str] = {}
        for name, probe in (("postgres", postgres), ("rabbitmq", rabbitmq), ("redis", redis)):
            try:
                await asyncio.wait_for(probe(), 2.0)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"unavailable: {type(exc).__name__}"
        return results
