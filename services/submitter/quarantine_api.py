"""``GET /v1/quarantine``: the events of the log the relay or the projection stepped past.

Kept apart from the job routes: it reads ``jobtrail_quarantine`` (``shared.quarantine``), a
record outside the log, as ``GET /v1/dead-letters`` reads the dead letters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from services.submitter import handlers
from services.submitter.auth import require
from services.submitter.deps import Deps
from shared import quarantine

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
