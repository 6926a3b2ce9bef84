"""The submitter's app for tests that call it in-process (real PostgreSQL and Redis, no broker),
and API keys: a real key in the test's database, in the ring."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI

from services.submitter.app import create_app
from services.submitter.deps import Deps
from shared import keys
from shared.domain import DEFAULT_TENANT
from shared.eventstore import AsyncJobStore, JobStore
from shared.jobtypes import registry
from shared.keys import KeyRing
from shared.redis_view import RedisView
from shared.settings import RedisSettings, StoreSettings


def issue_key(
    postgres_url: str,
    ring: KeyRing | None = None,
    tenant: str = DEFAULT_TENANT,
    scopes: Sequence[str] = ("admin",),
    name: str = "test",
) -> str:
    """Creates a key (the table too, when missing) and, given a ring, loads it there."""
    key = keys.issue(postgres_url, tenant, scopes, name)
    if ring is not None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            ring.refresh(conn, full=True)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def actor_of(headers: dict[str, str] | httpx.Headers, tenant: str = DEFAULT_TENANT) -> str:
    """The actor the log records for requests with these headers' key."""
    key_id = headers["Authorization"].split()[1].split("_")[1]
    return f"key:{key_id}@{tenant}"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem document of ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


@dataclass
class Served:
    app: FastAPI
    deps: Deps
    client: httpx.AsyncClient


@asynccontextmanager
async def served(
    settings: StoreSettings,
    redis_url: str,
    *,
    queues: Iterable[str] = ("default", "cpu", "io"),
    with_key: bool = True,
) -> AsyncIterator[Served]:
    """The submitter's app over a real store and a Redis view of its own (emptied at the end),
    with the example job types, and a client that sends an admin key unless ``with_key`` is
    False. Routes added to ``app`` before the first request are served too."""
    registry.load(["examples.jobs"])
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=f"jt-api-{uuid.uuid4().hex}"))
    try:
        async with AsyncJobStore(JobStore(settings)) as store:
            deps = Deps(store, view, registry, set(queues))
            app = create_app()
            app.state.deps = deps
            key = issue_key(settings.postgres_url, deps.keys) if with_key else None
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://jobtrail",
                headers=bearer(key) if key else {},
            ) as client:
                yield Served(app, deps, client)
    finally:
        leftovers = [k async for k in view.redis.scan_iter(f"{view.prefix}:*")]
        if leftovers:
            await view.redis.delete(*leftovers)
        await view.aclose()
