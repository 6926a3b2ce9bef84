"""The operations routes: the records kept outside the log (``GET /v1/dead-letters``, what
consumers rejected; ``GET /v1/quarantine``, the events the relay or the projection stepped
past), both admin-scoped and tenant-filtered, and the process's probes and metrics (``/healthz``,
``/readyz``, ``/metrics``).

Kept apart from the job routes (``api``): none of them reads or writes a job's history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from services.submitter import handlers
from services.submitter.api import problem
from services.submitter.auth import require
from services.submitter.deps import Deps
from services.submitter.models import DeadLetterView
from shared import dead_letters, quarantine
from shared.domain import DEFAULT_TENANT

router = APIRouter()


class QuarantinedView(BaseModel):
    """An event a follower could not process, as recorded when it stepped past it."""

    id: int
    at: datetime
    stage: Literal["relay", "projection"] = Field(
        description="relay: no bus message can be built from it; projection: it cannot be "
        "applied to Redis"
    )
    notification_id: int = Field(description="its position in the log")
    job_id: UUID | None
    version: int | None
    event_type: str = Field(description="the event's class, or its topic when it does not decode")
    error: str
    action: str = Field(
        description="job_failed (the job stood at this event: Quarantined recorded, FAILED), "
        "job_moved_on, job_final (it already ended at this event), undecodable, or "
        "hash_deleted (projection: reads go to the log)"
    )


@router.get("/v1/quarantine", response_model=list[QuarantinedView], tags=["jobs"])
async def get_quarantine(
    request: Request,
    job_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Any:
    """Events the relay or the projection quarantined instead of stopping at them, newest
    first; only those of ``job_id`` when given. Admin scope; only the key's tenant's jobs (as
    ``GET /v1/dead-letters``)."""
    principal = require(request.state, "admin")
    deps: Deps = request.app.state.deps
    store = deps.store
    if job_id is not None:
        await handlers.check_rows_job(store, job_id, principal.tenant)
    rows = await store.run_sync(quarantine.recorded, store.store, job_id, limit)
    return await handlers.tenants_rows(store, rows, principal.tenant)


@router.get("/v1/dead-letters", response_model=list[DeadLetterView], tags=["jobs"])
async def get_dead_letters(
    request: Request,
    job_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Any:
    """Messages consumers rejected to the dead-letter queue, newest first; only those naming
    ``job_id`` when given. Recorded in PostgreSQL, never in the job's history. Needs the admin
    scope; shows only the key's tenant's jobs (a dead letter naming no job of any tenant: only to
    the default tenant, the installation's own)."""
    principal = require(request.state, "admin")
    deps: Deps = request.app.state.deps
    store = deps.store
    if job_id is not None:
        await handlers.check_rows_job(store, job_id, principal.tenant)
    rows = await store.run_sync(dead_letters.recorded, store.store, job_id, limit)
    rows = await handlers.tenants_rows(store, rows, principal.tenant)
    return [row | {"body": bytes(row["body"]).decode(errors="replace")} for row in rows]


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process (docs/operations.md lists them): the installation's,
    so only to an admin key of the tenant ``default``."""
    if require(request.state, "admin").tenant != DEFAULT_TENANT:
        detail = "metrics are the installation's: use an admin key of the tenant 'default'"
        return problem(403, "Forbidden", detail, scope="admin")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. No I/O."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(request: Request) -> JSONResponse:
    """Readiness: PostgreSQL, RabbitMQ and Redis all answer."""
    deps: Deps = request.app.state.deps
    checks = await deps.check()
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )
