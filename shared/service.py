"""The skeleton every service runs in: the wiring steps they all share, in one order.

Why a module: each service's ``bootstrap.py`` used to repeat a dozen steps (settings, job
modules, broker, Redis, store, dead-letter middleware, metrics, publish on commit, connect,
declare the topology, start; then stop in the reverse order) with small drifts between them.
Each also serves ``/healthz``, ``/readyz`` and ``/metrics`` on its health port (``shared/
health.py``): the skeleton starts that server, samples the depth of the queues it consumes,
and runs the health monitor beside the service's loops; a service adds its own readiness checks
(``service.health.check``).
Here they are written once; a bootstrap only says what is its own (its routers, its loops, what
it does before the broker stops).

A ``Service`` is also the dependency its routers are built from (``subscribers.router(service,
...)``): it can be made without any I/O (settings, routes, an unconnected broker, a Redis client
that connects on first use), so ``services/specs.py`` documents the real routers, and the store
is there once the service is open (``async with service``). Order::

    service = Service("scheduler", prefetch=256, signals=True)   # nothing connects yet
    async with service:                                  # store, middleware, health port
        await service.start(subscribers.router(service))  # connect, declare, consume: ready
        await service.run({"leader": ...})               # with the health monitor, until SIGTERM
    # on exit: ``drain`` (if any), the on-commit publisher, the broker, Redis, the store
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faststream.rabbit import Channel, RabbitRouter
from faststream.rabbit.subscriber import RabbitSubscriber

from shared import dead_letters
from shared.eventstore import AsyncJobStore, JobStore
from shared.health import Health, HealthSettings
from shared.jobtypes import Registry, registry
from shared.messaging import Routes, declare_topology, make_broker
from shared.metrics import QUEUE_CONSUMERS, QUEUE_MESSAGES, child
from shared.publishing import Publisher, publish_on_commit
from shared.redis_view import RedisView
from shared.runtime import instance_id, stop_on_signals, supervise
from shared.settings import BusSettings, JobSettings, RedisSettings, StoreSettings

log = logging.getLogger(__name__)


class Service:
    """One service process: its settings, registry, routes, broker, Redis view and store.

    ``prefetch`` and ``graceful_timeout`` go to the broker (``make_broker``, without
    FastDepends); ``signals``: SIGTERM/SIGINT set ``stop`` (the processes; not tests, not the
    submitter, whose server handles them); ``serve_health``: listen on the health port
    (JOBTRAIL_HEALTH_PORT; not the submitter, which serves them on its API, nor in-process
    tests). Settings default to the environment's; tests pass their own."""

    def __init__(
        self,
        name: str,
        *,
        prefetch: int | None = None,
        graceful_timeout: float = 30.0,
        signals: bool = False,
        serve_health: bool = True,
        health: HealthSettings | None = None,
        bus: BusSettings | None = None,
        store: StoreSettings | None = None,
        redis: RedisSettings | None = None,
        job_modules: Iterable[str] | None = None,
    ) -> None:
        self.name = name
        self.instance = instance_id(name)
        self.bus = bus or BusSettings()
        self.store_settings = store or StoreSettings()
        self.redis_settings = redis or RedisSettings()
        modules = JobSettings().job_modules if job_modules is None else job_modules
        self.registry: Registry = registry.load(modules)
        self.queues = registry.declared_queues(self.bus.queues)
        """Every work queue of the deployment (declared by every service)."""
        self.routes = Routes.from_settings(self.bus)
        self.broker = make_broker(
            self.bus, prefetch=prefetch, graceful_timeout=graceful_timeout, apply_types=False
        )
        self.view = RedisView(self.redis_settings)  # connects on first use
        self.signals, self.serve_health = signals, serve_health
        self.health = Health(name, health or HealthSettings())
        self.depths: dict[str, int] = {}
        """Messages ready in each queue this service consumes, as last sampled."""
        self.depths_at = 0.0
        """time.monotonic() of the last sample of ``depths`` that read every queue."""
        self.consumers: dict[str, int] = {}
        """Consumers of each queue this service consumes (every process's), as last sampled."""
        self.drained_at = 0.0
        """time.monotonic() of the last sample that found every consumed queue empty."""
        self._sampling = Channel(publisher_confirms=False)  # a channel of its own
        self.publisher: Publisher | None = None
        self.drain: Callable[[], Awaitable[None]] | None = None
        """Run first when the service stops (the worker's graceful shutdown); it may stop the
        broker itself."""
        self.publish_grace_s = 5.0
        """How long the on-commit publisher may send what it holds when the service stops."""
        self.stop = asyncio.Event()
        self._store: AsyncJobStore | None = None
        self._exits = contextlib.AsyncExitStack()

    @property
    def store(self) -> AsyncJobStore:
        """The event store, once the service is open."""
        if self._store is None:
            raise RuntimeError(f"{self.name}: the store is not open (use `async with` first)")
        return self._store

    async def __aenter__(self) -> Service:
        if self.signals:
            self.stop = stop_on_signals()
        store = AsyncJobStore(JobStore(self.store_settings))
        self._store = await self._exits.enter_async_context(store)
        self._exits.push_async_callback(self.view.aclose)
        dead_letters.watch(self.broker, self._store)  # its rejects recorded; store metrics
        if self.serve_health:
            await self.health.serve()
            self._exits.push_async_callback(self.health.aclose)
        return self

    def on_close(self, callback: Callable[[], Awaitable[Any]]) -> None:
        """Runs ``callback`` when the service stops, after the broker, before Redis and the
        store close (the last registered first)."""
        self._exits.push_async_callback(callback)

    async def start(self, *routers: RabbitRouter, publish: bool = True) -> None:
        """Includes the routers, registers the on-commit publisher (unless told not to, or
        JOBTRAIL_PUBLISH_ON_COMMIT is off), connects, declares the whole topology (each work
        queue on the channel its subscriber consumes on: its prefetch), starts consuming."""
        for router in routers:
            self.broker.include_router(router)
        if publish:
            self.publisher = publish_on_commit(
                self.store, self.broker, self.routes, self.bus, self.view.redis, self.redis_settings
            )
        await self.broker.connect()
        await declare_topology(self.broker, self.routes, self.queues, channels=self.channels())
        await self.broker.start()
        if self.publisher is not None:
            self.publisher.start()
        if self.consumed():
            self.health.sample(self.sample_depths)
        self.health.started = True

    def consumed(self) -> list[str]:
        """The queues this service consumes."""
        subscribers = self.broker.subscribers
        return [sub.queue.name for sub in subscribers if isinstance(sub, RabbitSubscriber)]

    async def sample_depths(self) -> None:
        """Reads each consumed queue's ready messages and consumers (a passive declare each, on
        a channel of its own) into ``depths``, ``consumers`` and the queue gauges."""
        manager = self.broker.config.channel_manager
        channel = await manager.get_channel(self._sampling)
        depths: dict[str, int] = {}
        consumers: dict[str, int] = {}
        try:
            for name in self.consumed():
                queue = await channel.declare_queue(name, passive=True, robust=False, timeout=2.0)
                result = queue.declaration_result
                depths[name], consumers[name] = (
                    result.message_count or 0,
                    result.consumer_count or 0,
                )
                child(QUEUE_MESSAGES, name).set(depths[name])
                child(QUEUE_CONSUMERS, name).set(consumers[name])
        except BaseException:
            if channel.is_closed:  # a missing queue closes it: the next sample opens another
                self._sampling = Channel(publisher_confirms=False)
            raise
        self.depths, self.consumers, self.depths_at = depths, consumers, time.monotonic()
        if not any(depths.values()):
            self.drained_at = self.depths_at

    def channels(self) -> dict[str, Channel]:
        """The channel of each queue consumed on one of its own, by queue name."""
        return {
            sub.queue.name: sub.channel
            for sub in self.broker.subscribers
            if isinstance(sub, RabbitSubscriber) and sub.channel is not None
        }

    async def run(self, loops: dict[str, Callable[[], Awaitable[None]]]) -> None:
        """Runs the service's loops and the health monitor until ``stop`` is set (a crashed
        loop restarts)."""
        await supervise({**loops, "health": self.health.monitor}, self.stop)

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.drain is not None:
                await self.drain()
            if self.publisher is not None:  # what it cannot send now, the relay sends
                await self.publisher.aclose(timeout_s=self.publish_grace_s)
            await self.broker.stop()
        finally:
            await self._exits.aclose()
            self._store = None
