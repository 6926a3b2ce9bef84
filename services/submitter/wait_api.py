"""``GET /v1/jobs/{id}/wait``: a long poll that answers once the job has ended (COMPLETED,
FAILED or CANCELLED) or its timeout has passed, so a client learns the outcome with one request
instead of polling.

How it waits: it reads the job as ``GET /v1/jobs/{id}`` does (the Redis hash, else the log) and
sleeps between reads, 50 ms at first, doubling up to half a second: a wait of a minute costs
about 120 reads of one hash, each a round trip to Redis, inside the submitter. Chosen over
Redis keyspace notifications (not enabled on every server, and the projector's writes would
wake every submitter for every job) and over a pub/sub channel the projector would publish to
(a change to the projector and its Lua scripts, and a job whose hash is gone, or read from the
log while Redis is away, must still be read anyway). The waits of one process are bounded
(``Waiters``: ``JOBTRAIL_SUBMITTER_MAX_WAITERS``, past it 503 + Retry-After) and each is cut at
``JOBTRAIL_SUBMITTER_WAIT_MAX_S``; a client that goes away stops its wait at the next read.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request

from contracts.api import ENDED, JobView
from services.submitter import handlers
from services.submitter.api import problem
from services.submitter.auth import require
from services.submitter.deps import Deps
from shared.domain import DEFAULT_TENANT
from shared.domain.errors import JobNotFoundError

router = APIRouter()

FIRST_PAUSE_S = 0.05
"""The pause after the first read; it doubles after each read up to ``PAUSE_CAP_S``."""
PAUSE_CAP_S = 0.5
MAX_TIMEOUT_S = 60.0
"""The longest wait a request may ask (the setting can only shorten it)."""
BUSY_RETRY_AFTER_S = 1


@router.get("/v1/jobs/{job_id}/wait", response_model=JobView, tags=["jobs"])
async def wait_job(
    request: Request,
    job_id: UUID,
    wait_s: Annotated[
        float,
        Query(
            alias="timeout",
            ge=0,
            le=MAX_TIMEOUT_S,
            description="seconds to wait at most (the server may cut it shorter: "
            "JOBTRAIL_SUBMITTER_WAIT_MAX_S)",
        ),
    ] = 30.0,
) -> Any:
    """The job once it has ended (COMPLETED, FAILED or CANCELLED), or as it stands when
    ``timeout`` seconds have passed: the same answer as ``GET /v1/jobs/{id}``, sooner or later.
    A status that has not ended means the wait timed out: ask again. 503 + Retry-After when this
    submitter has as many waits as it allows (JOBTRAIL_SUBMITTER_MAX_WAITERS)."""
    principal = require(request.state, "read")
    deps: Deps = request.app.state.deps
    waiters = deps.waiters
    if not waiters.enter():
        detail = f"this submitter has {waiters.limit} waits already; retry later"
        response = problem(503, "Too many waits", detail)
        response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
        return response
    try:
        deadline = time.monotonic() + min(wait_s, waiters.max_wait_s)
        pause = FIRST_PAUSE_S
        while True:
            job = await handlers.read_job(deps.store, deps.view, job_id)
            if job.get("tenant", DEFAULT_TENANT) != principal.tenant:
                raise JobNotFoundError(job_id)  # another tenant's: the 404 of no job at all
            left = deadline - time.monotonic()
            if job["status"] in ENDED or left <= 0 or await request.is_disconnected():
                break
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, PAUSE_CAP_S)
    finally:
        waiters.leave()
    try:
        job["progress"] = await deps.view.get_progress(job_id)
    except Exception:
        job["progress"] = None
    return job
