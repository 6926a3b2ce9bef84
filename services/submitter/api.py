"""The HTTP API of jobs (OpenAPI at /openapi.json): submit, read, list, cancel and requeue.

Over 300 lines but one thing: the job routes and nothing else, one short function each, in the
order the OpenAPI document lists them. What they use lives beside it: the fast paths and the
media-type check in ``media``, the models in ``models``, the use cases in ``handlers``, how a
job and an event are shown in ``shared.views``; the records outside the log (dead letters,
quarantine), the probes and the metrics in ``ops_api``; the long poll in ``wait_api``; the
dashboard's routes in ``ui``."""

from __future__ import annotations

import logging
import math
import re
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BeforeValidator

from contracts.messages import SubmitJob
from services.submitter import handlers
from services.submitter.auth import require
from services.submitter.deps import Deps
from services.submitter.media import MediaRoute, ReadRoute, SubmitRoute
from services.submitter.models import (
    Accepted,
    BatchItem,
    BatchRequest,
    CancelRequest,
    EventView,
    JobView,
    Page,
    RequeueRequest,
    StatusName,
)
from shared import tracing
from shared.domain import DEFAULT_TENANT, Cause, job_id_for_key
from shared.domain.errors import JobNotFoundError
from shared.keys import Principal
from shared.views import api_view, job_view

log = logging.getLogger(__name__)

router = APIRouter(route_class=MediaRoute)
"""The API's routes; the app registers them on its own router (app.create_app)."""


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def _cause(request: Request, principal: Principal, reason: str | None = None) -> Cause:
    """The cause of what a request records: the actor is the authenticated key (never a header);
    the ids were checked by the request-id middleware."""
    correlation = request.headers.get("X-Correlation-Id") or request.state.request_id
    return tracing.traced(Cause(principal.actor, correlation, request.state.request_id, reason))


def _owned(job: dict[str, Any], principal: Principal, job_id: UUID) -> dict[str, Any]:
    """The job when it is the principal's tenant's; another tenant's job is not found (the same
    404 as a job that does not exist)."""
    if job.get("tenant", DEFAULT_TENANT) != principal.tenant:
        raise JobNotFoundError(job_id)
    return job


def _iso_time(value: Any) -> Any:
    """A time in a query is ISO 8601 text: pydantic would also read ``0.5`` as a Unix time."""
    if isinstance(value, str) and not ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 time with a zone, e.g. 2026-11-29T09:00:00Z")
    return value


ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_time)]


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


async def submit_job(
    request: Request,
    response: Response,
    job: SubmitJob,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> Any:
    """Submits a job. Answers 202 only once the Submitted event is committed. The same
    idempotency key (body field or Idempotency-Key header) with the same request returns the same
    job; with a different request, 409."""
    principal = require(request.state, "submit")
    deps = _deps(request)
    if idempotency_key and job.idempotency_key and idempotency_key != job.idempotency_key:
        return problem(
            422,
            "Invalid request",
            "Idempotency-Key header and body field differ",
            errors=[{"field": "idempotency_key", "message": "differs from the header"}],
        )
    if idempotency_key and not job.idempotency_key:
        job = job.model_copy(update={"idempotency_key": idempotency_key})
    cause = _cause(request, principal)
    submission = handlers.prepare(job, deps.registry, deps.queues, cause, tenant=principal.tenant)
    if deps.pending_cap is not None:
        await deps.pending_cap.admit(principal.tenant)
    created, replayed = await handlers.submit(deps.store, submission)
    response.headers["Location"] = f"/v1/jobs/{created.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return Accepted(
        id=created.id,
        status=created.status.value,
        type=created.job_type,
        version=created.version,
        replayed=replayed,
    )


router.add_api_route(  # SubmitRoute: the fast path of a plain submission (media.py)
    "/v1/jobs",
    submit_job,
    methods=["POST"],
    status_code=202,
    response_model=Accepted,
    tags=["jobs"],
    route_class_override=SubmitRoute,
)


@router.post("/v1/jobs/batch", status_code=202, response_model=list[BatchItem], tags=["jobs"])
async def submit_batch(request: Request, batch: BatchRequest) -> Any:
    """Submits up to 1,000 jobs in one transaction; answers each job's id, or its errors."""
    principal = require(request.state, "submit")
    deps = _deps(request)
    cause = _cause(request, principal)
    items: list[BatchItem] = []
    prepared: list[tuple[int, handlers.Submission]] = []
    for index, raw in enumerate(batch.jobs):
        try:
            prepared.append(
                (
                    index,
                    handlers.prepare(
                        SubmitJob.model_validate(raw),
                        deps.registry,
                        deps.queues,
                        cause,
                        tenant=principal.tenant,
                    ),
                )
            )
        except handlers.InvalidRequestError as exc:
            items.append(BatchItem(index=index, errors=exc.errors))
        except Exception as exc:
            errors = getattr(exc, "errors", None)
            details = errors() if callable(errors) else [{"message": str(exc)}]
            items.append(
                BatchItem(
                    index=index,
                    errors=[
                        {
                            "field": ".".join(str(p) for p in e.get("loc", ())),
                            "message": e.get("msg", e.get("message")),
                        }
                        for e in details
                    ],
                )
            )
    if deps.pending_cap is not None and prepared:
        await deps.pending_cap.admit(principal.tenant, len(prepared))
    outcomes = await handlers.submit_many(deps.store, [s for _, s in prepared])
    for (index, _), outcome in zip(prepared, outcomes, strict=True):
        if outcome.error is not None:
            items.append(
                BatchItem(index=index, errors=[{"field": "", "message": str(outcome.error)}])
            )
        else:
            assert outcome.job is not None
            items.append(
                BatchItem(
                    index=index,
                    id=outcome.job.id,
                    status=outcome.job.status.value,
                    replayed=not outcome.events,
                )
            )
    return sorted(items, key=lambda item: item.index)


async def get_job(
    request: Request,
    job_id: UUID,
    at: Annotated[
        AwareDatetime | None,
        Query(description="the job as it was at this time (ISO 8601 with a zone), from the log"),
    ] = None,
    version: Annotated[
        int | None, Query(ge=1, description="the job after its first N events, from the log")
    ] = None,
) -> Any:
    """The job's current status: from Redis, or from the log when Redis has no entry. With
    ``at`` or ``version``, the job as it was then, always from the log: 404 when the job did not
    exist yet at that time or has fewer versions."""
    principal = require(request.state, "read")
    deps = _deps(request)
    if at is not None and version is not None:
        message = "give at or version, not both"
        return problem(
            422,
            "Invalid request",
            message,
            errors=[
                {"field": "query.at", "message": message},
                {"field": "query.version", "message": message},
            ],
        )
    if at is not None or version is not None:
        try:
            then = await handlers.read_job_then(deps.store, job_id, at=at, version=version)
        except JobNotFoundError:
            # "no such version/time" says the job exists: only to its own tenant
            await handlers.owned_job(deps.store, job_id, principal.tenant)
            raise
        return _owned(then, principal, job_id)
    job = _owned(await handlers.read_job(deps.store, deps.view, job_id), principal, job_id)
    try:
        job["progress"] = await deps.view.get_progress(job_id)
    except Exception:
        job["progress"] = None
    return job


router.add_api_route(  # ReadRoute: the fast path of a plain status read (media.py)
    "/v1/jobs/{job_id:job}",  # not /v1/jobs/batch (media.JobIdConvertor)
    get_job,
    methods=["GET"],
    response_model=JobView,
    tags=["jobs"],
    route_class_override=ReadRoute,
)


@router.get("/v1/jobs/{job_id}/events", response_model=list[EventView], tags=["jobs"])
async def get_events(request: Request, job_id: UUID) -> Any:
    """The job's whole history from the log, in version order: one record per event, as
    ``jobtrail audit`` exports it."""
    principal = require(request.state, "read")
    return await handlers.history(_deps(request).store, job_id, principal.tenant)


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobView, tags=["jobs"])
async def cancel_job(
    request: Request, job_id: UUID, body: Annotated[CancelRequest | None, Body()] = None
) -> Any:
    """Cancels a job that is not running; asks a running one to stop (its worker acknowledges).
    A job that already ended answers 409 and nothing is recorded."""
    principal = require(request.state, "cancel")
    deps = _deps(request)
    reason = body.reason if body else None
    cause = _cause(request, principal, reason)
    job = await handlers.cancel(deps.store, job_id, cause, principal.tenant)
    return job_view(job) | {"source": "log"}


@router.post("/v1/jobs/{job_id}/requeue", status_code=202, response_model=JobView, tags=["jobs"])
async def requeue_job(
    request: Request, job_id: UUID, body: Annotated[RequeueRequest | None, Body()] = None
) -> Any:
    """Gives a FAILED job ``extra_attempts`` more attempts: it is PENDING again and the scheduler
    dispatches it at once. Recorded as a Requeued event with the acting key and the reason,
    which is required (scope cancel). 409 unless the job is FAILED (nothing
    is recorded), 404 for an unknown job."""
    require(request.state, "cancel")
    if body is None:
        detail = "reason: required (say why the job runs again)"
        errors = [{"field": "reason", "message": "Field required", "type": "missing"}]
        return problem(422, "Invalid request", detail, errors=errors)
    principal = require(request.state, "cancel")
    deps = _deps(request)
    cause = _cause(request, principal, body.reason)
    job = await handlers.requeue(deps.store, job_id, cause, body.extra_attempts, principal.tenant)
    return job_view(job) | {"source": "log"}


@router.get("/v1/jobs", response_model=Page, tags=["jobs"])
async def list_jobs(
    request: Request,
    status: StatusName | None = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64, pattern=r"^\d+(\.\d+)?$")] = None,
    since: Annotated[
        IsoTime | None, Query(description="only jobs created at or after this time")
    ] = None,
    until: Annotated[
        IsoTime | None, Query(description="only jobs created before this time")
    ] = None,
    idempotency_key: Annotated[
        str | None, Query(min_length=1, max_length=256, description="the job of this key, if any")
    ] = None,
) -> Any:
    """A page of the key's tenant's jobs from the projection, newest first; pass next_cursor to
    get the next. ``since`` (inclusive) and ``until`` (exclusive) bound their creation time, to
    the millisecond; ``idempotency_key`` finds the one job submitted with that key in the
    tenant, whatever its age."""
    principal = require(request.state, "read")
    deps = _deps(request)
    if idempotency_key is not None:
        job_id = job_id_for_key(idempotency_key, principal.tenant)
        try:
            job = _owned(await handlers.read_job(deps.store, deps.view, job_id), principal, job_id)
        except JobNotFoundError:
            return Page(jobs=[], next_cursor=None)
        matches = (not status or job["status"] == status) and (not type or job["type"] == type)
        return Page(jobs=[job] if matches else [], next_cursor=None)
    before = float(cursor) if cursor else None
    if until is not None:  # the index holds whole milliseconds: compare in them
        until_ms = float(math.floor(until.timestamp() * 1000))
        before = until_ms if before is None else min(before, until_ms)
    views = await deps.view.page(
        tenant=principal.tenant,
        status=status,
        job_type=type,
        limit=limit,
        before=before,
        after=float(math.floor(since.timestamp() * 1000)) if since is not None else None,
    )
    jobs = [api_view(v) | {"source": "cache"} for v in views]
    next_cursor = views[-1]["created_ms"] if len(views) == limit else None
    return Page(jobs=jobs, next_cursor=next_cursor)
