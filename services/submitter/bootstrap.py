"""Builds the submitter: the API, its broker (command subscribers) and the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.submitter import subscribers
from services.submitter.admission import PendingCap
from services.submitter.app import create_app, lifespan_for
from services.submitter.auth import AuthSettings, anonymous_principal, refresh_keys
from services.submitter.deps import Deps
from services.submitter.server import MAX_HEAD_BYTES, BoundedHttpToolsProtocol
from shared import dead_letters, keys
from shared.eventstore import AsyncJobStore, JobStore
from shared.eventstore.tables import on_connection
from shared.jobtypes import registry
from shared.messaging import Routes, declare_topology, make_broker
from shared.publishing import publish_on_commit
from shared.ratelimit import RateLimiter
from shared.redis_view import RedisView
from shared.runtime import instance_id
from shared.settings import (
    BusSettings,
    JobSettings,
    LimitSettings,
    RedisSettings,
    StoreSettings,
)


class SubmitterSettings(BaseSettings):
    """The HTTP server (prefix JOBTRAIL_SUBMITTER_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_SUBMITTER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_head_bytes: int = Field(
        default=MAX_HEAD_BYTES, ge=4096, le=1_048_576, description="request line and headers"
    )


@asynccontextmanager
async def dependencies() -> AsyncIterator[Deps]:
    bus, store_settings = BusSettings(), StoreSettings()
    registry.load(JobSettings().job_modules)
    queues = set(registry.declared_queues(bus.queues))
    routes = Routes.from_settings(bus)
    broker = make_broker(bus, prefetch=64, apply_types=False)
    redis_settings = RedisSettings()
    view = RedisView(redis_settings)
    auth, limits = AuthSettings(), LimitSettings()
    async with AsyncJobStore(JobStore(store_settings)) as store:
        deps = Deps(store, view, registry, queues, broker, instance_id("submitter"))
        deps.anonymous = anonymous_principal(auth)
        limiter = RateLimiter.from_settings(limits)
        deps.rate_limit = limiter.check if limiter.enabled else None
        deps.pending_cap = PendingCap(view, limits.tenant_max_pending)
        if store_settings.postgres_create_schema:
            await store.run_sync(on_connection, store.store, keys.create_table)

        async def refresh(full: bool = False) -> None:
            def read(conn: Any) -> int:
                return deps.keys.refresh(conn, full=full)

            await store.run_sync(on_connection, store.store, read)

        await refresh(full=True)
        refreshing = asyncio.create_task(refresh_keys(deps.keys, refresh, auth.refresh_s))
        dead_letters.watch(broker, store)
        subscribers.register(broker, routes, deps)
        publisher = publish_on_commit(store, broker, routes, bus, view.redis, redis_settings)
        await broker.connect()
        await declare_topology(broker, routes, sorted(queues))
        await broker.start()
        if publisher is not None:
            publisher.start()
        try:
            yield deps
        finally:
            refreshing.cancel()
            if publisher is not None:
                await publisher.aclose()
            await broker.stop()
            await view.aclose()


def build_app() -> FastAPI:
    settings = SubmitterSettings()
    return create_app(
        lifespan_for(dependencies),
        max_body_bytes=settings.max_body_bytes,
        max_head_bytes=settings.max_head_bytes,
    )


def run() -> None:
    settings = SubmitterSettings()
    uvicorn.run(
        build_app(),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=20,
        http=BoundedHttpToolsProtocol,  # llhttp; 414/431 for an oversized head, not a reset
        loop="auto",  # uvloop (a dependency where it exists), else asyncio
        h11_max_incomplete_event_size=settings.max_head_bytes,  # the bound the protocol reads
    )
