"""Wires the submitter: the HTTP API and its server, the command router, the service skeleton
(shared/service.py) run from the API's lifespan."""

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
from services.submitter.admission import PendingCap, Waiters
from services.submitter.app import create_app, lifespan_for
from services.submitter.auth import AuthSettings, anonymous_principal, refresh_keys
from services.submitter.deps import Deps
from services.submitter.server import MAX_HEAD_BYTES, BoundedHttpToolsProtocol
from shared import keys
from shared.eventstore.tables import on_connection
from shared.ratelimit import RateLimiter
from shared.service import Service
from shared.settings import LimitSettings


class SubmitterSettings(BaseSettings):
    """The HTTP server (prefix JOBTRAIL_SUBMITTER_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_SUBMITTER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_head_bytes: int = Field(
        default=MAX_HEAD_BYTES, ge=4096, le=1_048_576, description="request line and headers"
    )
    max_waiters: int = Field(
        default=1000, ge=1, le=100_000, description="long polls (GET /v1/jobs/{id}/wait) at once"
    )
    wait_max_s: float = Field(
        default=60.0, gt=0, le=60, description="the longest a long poll waits, whatever it asks"
    )


@asynccontextmanager
async def dependencies() -> AsyncIterator[Deps]:
    """The submitter's service (shared/service.py: store, broker, Redis, the command router,
    publish on commit) and what its HTTP side needs on top: keys, rate limits, pending caps."""
    service = Service("submitter", prefetch=64, serve_metrics=False)  # /metrics is the API's
    auth, limits, http = AuthSettings(), LimitSettings(), SubmitterSettings()
    async with service:
        store = service.store
        deps = Deps(
            store,
            service.view,
            service.registry,
            set(service.queues),
            service.broker,
            service.instance,
        )
        deps.anonymous = anonymous_principal(auth)
        limiter = RateLimiter.from_settings(limits)
        deps.rate_limit = limiter.check if limiter.enabled else None
        deps.pending_cap = PendingCap(service.view, limits.tenant_max_pending)
        deps.waiters = Waiters(http.max_waiters, http.wait_max_s)
        if service.store_settings.postgres_create_schema:
            await store.run_sync(on_connection, store.store, keys.create_table)

        async def refresh(full: bool = False) -> None:
            def read(conn: Any) -> int:
                return deps.keys.refresh(conn, full=full)

            await store.run_sync(on_connection, store.store, read)

        await refresh(full=True)
        refreshing = asyncio.create_task(refresh_keys(deps.keys, refresh, auth.refresh_s))
        try:
            await service.start(subscribers.router(service))
            yield deps
        finally:
            refreshing.cancel()


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
