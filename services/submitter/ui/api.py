"""The read and bulk endpoints the dashboard needs, on the API's keys and tenant scoping:
``GET /v1/overview``, ``GET /v1/jobs/{id}/verify`` and ``POST /v1/bulk/{cancel,requeue}``.

Each is an ordinary API endpoint (any client may call it); the dashboard's pages call them with
the key the operator gave the page (docs/dashboard.md).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.submitter import handlers
from services.submitter.api import problem
from services.submitter.auth import require
from services.submitter.deps import Deps
from services.submitter.media import MediaRoute
from services.submitter.models import StatusName
from services.submitter.ui import figures
from services.submitter.ui.verify import verify_job
from shared import dead_letters
from shared.domain import Cause, JobError
from shared.domain.cause import storable
from shared.domain.errors import JobNotFoundError
from shared.domain.status import Status
from shared.keys import Principal
from shared.retrying import TRANSIENT

log = logging.getLogger(__name__)

router = APIRouter(route_class=MediaRoute)

BULK_MAX = 100
"""Jobs one bulk request may name."""

STATUSES: tuple[StatusName, ...] = (
    "PENDING",
    "SCHEDULED",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
)


class Minute(BaseModel):
    minute: str = Field(description="the minute's start (UTC)")
    completed: int = Field(description="jobs that completed in that minute")
    failed: int = Field(description="jobs that failed for good in that minute")
    attempts_failed: int = Field(description="attempts that failed (some were retried)")


class Lag(BaseModel):
    """How far the followers of the log are behind it (the log's size is not shown: it is the
    installation's, every tenant's)."""

    relay_events: int = Field(description="notifications the relay has not handled yet")
    projection_events: int = Field(description="notifications not applied to Redis yet")


class DeadLetters(BaseModel):
    recorded_24h: int = Field(description="dead letters recorded in the last 24 hours")
    newest_at: datetime | None


class Overview(BaseModel):
    """What the dashboard's overview shows, for the key's tenant."""

    tenant: str
    at: datetime
    statuses: dict[str, int] = Field(description="the tenant's jobs by status (the projection)")
    types: dict[str, int] = Field(
        description="the tenant's jobs held in Redis, by job type (the types this submitter knows)"
    )
    minutes: list[Minute] = Field(description="oldest first, the current minute last")
    partial: bool = Field(description="the log was read only back to a bound: see docs")
    lag: Lag | None = Field(description="null when the log or Redis did not answer")
    dead_letters: DeadLetters | None = Field(description="admin keys only, else null")


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def _figures(request: Request) -> figures.Figures:
    found: figures.Figures | None = getattr(request.app.state, "ui_figures", None)
    if found is None:
        found = request.app.state.ui_figures = figures.Figures()
    return found


async def _lag(deps: Deps, cache: figures.Figures) -> Lag | None:
    async def read() -> Lag:
        log_lag = await deps.store.run_sync(figures.lag, deps.store.store)
        _, projected = await deps.view.locate()
        head = log_lag["head"]
        return Lag(
            relay_events=max(head - log_lag["relay"], 0),
            projection_events=max(head - projected, 0),
        )

    try:
        lag: Lag = await cache.lag.get(read)
        return lag
    except Exception as exc:  # a figure of the dashboard; never a 500 for it
        log.warning("overview: no lag figures: %r", exc)
        return None


async def _dead_letters(deps: Deps, principal: Principal) -> DeadLetters:
    store = deps.store
    rows = await store.run_sync(dead_letters.recorded, store.store, None, 1000)
    rows = await handlers.tenants_rows(store, rows, principal.tenant)
    since = datetime.now(UTC) - timedelta(hours=24)
    recent = [row for row in rows if row["at"] >= since]
    return DeadLetters(
        recorded_24h=len(recent), newest_at=max((r["at"] for r in recent), default=None)
    )


@router.get("/v1/overview", response_model=Overview, tags=["dashboard"])
async def overview(request: Request) -> Any:
    """The key's tenant at a glance: its jobs by status and by type, jobs completed and failed
    per minute over the last 15 minutes (from the log), the relay's and the projection's lag,
    and, for an admin key, the dead letters recorded in the last 24 hours. Figures are read at
    most every few seconds per submitter, whoever asks (scope read)."""
    principal = require(request.state, "read")
    deps = _deps(request)
    cache = _figures(request)
    view = await deps.view.current()
    space = view.space or await view.active_space()  # current() is pinned: space is set
    names = sorted(deps.registry.names())
    pipe = view.redis.pipeline(transaction=False)
    pipe.hmget(space.counts_key, [f"tenant:{principal.tenant}:{s}" for s in STATUSES])
    for name in names:
        pipe.zcard(space.index_key("type", name, principal.tenant))
    counts, *sizes = await pipe.execute()
    statuses = {status: int(n or 0) for status, n in zip(STATUSES, counts, strict=True)}
    types = {name: int(size) for name, size in zip(names, sizes, strict=True) if int(size)}
    now = datetime.now(UTC)

    async def read_throughput() -> dict[str, Any]:
        return await deps.store.run_sync(figures.throughput, deps.store.store, now)

    found = await cache.throughput.get(read_throughput)
    letters = None
    if principal.allows("admin"):
        letters = await cache.dead_letters_of(principal.tenant).get(
            lambda: _dead_letters(deps, principal)
        )
    return Overview(
        tenant=principal.tenant,
        at=now,
        statuses=statuses,
        types=types,
        minutes=[Minute(**row) for row in figures.minutes_of(found, principal.tenant)],
        partial=found["partial"],
        lag=await _lag(deps, cache),
        dead_letters=letters,
    )


class VerifyProblem(BaseModel):
    kind: str
    detail: str
    version: int | None


class Verification(BaseModel):
    """The hash chain of one job's stored events, recomputed now."""

    job_id: UUID
    ok: bool
    events: int
    problems: list[VerifyProblem]
    last_notification_id: int = Field(description="where the job's newest event is in the log")
    checkpointed: bool = Field(
        description="a checkpoint of the log head covers the job's newest event"
    )


@router.get("/v1/jobs/{job_id}/verify", response_model=Verification, tags=["dashboard"])
async def verify(request: Request, job_id: UUID) -> Any:
    """Recomputes the job's SHA-256 hash chain from its stored events (as ``jobtrail verify``
    does for every job) and says whether a checkpoint covers its newest event (scope audit)."""
    principal = require(request.state, "audit")
    store = _deps(request).store
    await handlers.owned_job(store, job_id, principal.tenant)
    return await store.run_sync(verify_job, store.store, job_id)


def _text(value: str) -> str:
    if not storable(value):
        raise ValueError("is not valid Unicode (a lone surrogate)")
    return value


class BulkRequest(BaseModel):
    """Jobs to cancel or requeue, and why (recorded in each job's history)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[UUID] = Field(min_length=1, max_length=BULK_MAX)
    reason: Annotated[str | None, AfterValidator(lambda v: v if v is None else _text(v))] = Field(
        default=None, min_length=1, max_length=1024, pattern=r"\S"
    )
    extra_attempts: int = Field(default=1, ge=1, le=100, description="requeue only")


class BulkItem(BaseModel):
    id: UUID
    ok: bool
    status: StatusName | None = Field(description="the job's status afterwards, when ok")
    error: str | None = Field(description="why nothing was recorded: not found, or a conflict")
    http_status: int = Field(description="what the single-job endpoint would have answered")


class BulkAnswer(BaseModel):
    action: Literal["cancel", "requeue"]
    actor: str = Field(description="who the events record: the acting key")
    items: list[BulkItem]


@router.post("/v1/bulk/cancel", response_model=BulkAnswer, tags=["dashboard"])
async def bulk_cancel(request: Request, body: BulkRequest) -> Any:
    """Cancels up to 100 of the key's tenant's jobs, each in its own transaction, as
    ``POST /v1/jobs/{id}/cancel`` would (scope cancel); each event records the acting key and the
    reason. Answers 200 with each job's outcome: another tenant's job or an unknown one is not
    found (404); a job that already ended is a conflict (409), and nothing is recorded for it."""
    return await _bulk(request, "cancel", body)


@router.post("/v1/bulk/requeue", response_model=BulkAnswer, tags=["dashboard"])
async def bulk_requeue(request: Request, body: BulkRequest) -> Any:
    """Gives up to 100 of the key's tenant's FAILED jobs ``extra_attempts`` more attempts, each
    as ``POST /v1/jobs/{id}/requeue`` would (scope cancel); ``reason`` is required and recorded
    with the acting key. Answers 200 with each job's outcome: not found (404), or a conflict
    (409: the job is not FAILED, nothing recorded)."""
    return await _bulk(request, "requeue", body)


async def _bulk(request: Request, action: Literal["cancel", "requeue"], body: BulkRequest) -> Any:
    principal = require(request.state, "cancel")
    if action == "requeue" and body.reason is None:
        errors = [{"field": "reason", "message": "Field required", "type": "missing"}]
        return problem(422, "Invalid request", "reason: required to requeue", errors=errors)
    deps = _deps(request)
    correlation = request.headers.get("X-Correlation-Id") or request.state.request_id
    cause = Cause(principal.actor, correlation, request.state.request_id, body.reason)
    items: list[BulkItem] = []
    ids = list(dict.fromkeys(body.ids))  # each job once, in the order given
    for n, job_id in enumerate(ids):
        try:
            if action == "cancel":
                job = await handlers.cancel(deps.store, job_id, cause, principal.tenant)
            else:
                job = await handlers.requeue(
                    deps.store, job_id, cause, body.extra_attempts, principal.tenant
                )
        except JobNotFoundError as exc:
            items.append(_failed(job_id, 404, str(exc)))
        except JobError as exc:
            items.append(_failed(job_id, 409, str(exc)))
        except TRANSIENT as exc:
            # the store is away or overloaded: what was recorded stays reported (a whole-request
            # 503 would hide it); this job and the rest were not done, retry them
            log.warning("bulk %s stopped at %s: %r", action, job_id, exc)
            items.append(_failed(job_id, 503, "the event store is unavailable; retry this job"))
            items.extend(
                _failed(rest, 503, "not attempted; retry this job") for rest in ids[n + 1 :]
            )
            break
        else:
            status: Any = str(Status(job.status))
            items.append(BulkItem(id=job_id, ok=True, status=status, error=None, http_status=202))
    return BulkAnswer(action=action, actor=principal.actor, items=items)


def _failed(job_id: UUID, http_status: int, error: str) -> BulkItem:
    return BulkItem(id=job_id, ok=False, status=None, error=error, http_status=http_status)
