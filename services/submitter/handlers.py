"""Submission, cancellation and reads, shared by the HTTP API and the message subscribers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from pydantic import ValidationError

from contracts.messages import SubmitJob
from shared.domain import DEFAULT_TENANT, Cause, Job, job_id_for_key
from shared.domain.errors import JobNotFoundError
from shared.eventstore import AsyncJobStore, Command, Outcome, existing
from shared.eventstore.export import EventExport, state_at_time, state_at_version
from shared.jobtypes import Registry, UnknownJobTypeError
from shared.redis_view import RedisView
from shared.views import api_view, job_view

_SUBMIT_MESSAGE_NAMESPACE = uuid5(NAMESPACE_URL, "urn:jobtrail:submit-message")


def job_id_for_message(message_id: UUID) -> UUID:
    """The job id of a SubmitJob message without an idempotency key: its deliveries meet one job."""
    return uuid5(_SUBMIT_MESSAGE_NAMESPACE, str(message_id))


class InvalidRequestError(Exception):
    """The request names an unknown type or queue, or its payload does not fit the type."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Submission:
    job_id: UUID
    command: Command


def prepare(
    request: SubmitJob,
    registry: Registry,
    queues: set[str],
    cause: Cause,
    *,
    message_id: UUID | None = None,
    tenant: str = DEFAULT_TENANT,
) -> Submission:
    """Checks a request against its job type and fills in the type's defaults.

    The job id comes from the idempotency key; without one, from ``message_id`` (a SubmitJob
    message: a redelivery of the same message, after a lost ack or a park, meets its first job);
    else it is new. The job belongs to ``tenant`` (its key's); idempotency keys are per tenant."""
    try:
        job_type = registry.get(request.type)
    except UnknownJobTypeError as exc:
        raise InvalidRequestError([{"field": "type", "message": str(exc)}]) from None
    try:
        job_type.parse_payload(request.payload)
    except ValidationError as exc:
        raise InvalidRequestError(
            [
                {
                    "field": ".".join(["payload", *(str(p) for p in err["loc"])]),
                    "message": err["msg"],
                    "type": err["type"],
                }
                for err in exc.errors()
            ]
        ) from None
    queue = request.queue or job_type.queue
    if queue not in queues:
        raise InvalidRequestError(
            [{"field": "queue", "message": f"unknown queue {queue!r}; known: {sorted(queues)}"}]
        )
    fields: dict[str, Any] = {
        "job_type": request.type,
        "payload": request.payload,
        "priority": job_type.priority if request.priority is None else request.priority,
        "max_attempts": request.max_attempts or job_type.max_attempts,
        "timeout_s": request.timeout_s or job_type.timeout_s,
        "queue": queue,
        "run_at": request.run_at,
        "idempotency_key": request.idempotency_key,
        "tenant": tenant,
    }
    if request.idempotency_key:
        job_id = job_id_for_key(request.idempotency_key, tenant)
    elif message_id is not None:
        job_id = job_id_for_message(message_id)
    else:
        job_id = uuid4()

    def command(current: Job | None) -> Job:
        job = Job.submit_once(current, cause, job_id=job_id, **fields)
        if current is None:  # a new job due at once is dispatched in the same transaction
            job.dispatch_if_due(cause)
        return job

    return Submission(job_id, command)


async def submit(store: AsyncJobStore, submission: Submission) -> tuple[Job, bool]:
    """Commits the submission; returns the job and whether it already existed (a replay)."""
    outcome = await store.submit(submission.job_id, submission.command)
    job = outcome.unwrap()
    return job, not outcome.events


async def submit_many(store: AsyncJobStore, submissions: list[Submission]) -> list[Outcome]:
    """Commits many submissions in one transaction."""
    return await store.execute_many([(s.job_id, s.command) for s in submissions])


def _of(tenant: str | None, job: Job) -> Job:
    """The job when it is ``tenant``'s (any tenant's for None: the bus, a trusted interface);
    another tenant's job is not found (decided in the command's transaction, under its lock)."""
    if tenant is not None and job.tenant != tenant:
        raise JobNotFoundError(job.id)
    return job


async def cancel(
    store: AsyncJobStore, job_id: UUID, cause: Cause, tenant: str | None = None
) -> Job:
    """Cancels at once when not running, else records the request; JobError when final,
    JobNotFoundError when there is no such job in ``tenant``."""

    return await store.execute(job_id, existing(lambda job: _of(tenant, job).request_cancel(cause)))


async def requeue(
    store: AsyncJobStore,
    job_id: UUID,
    cause: Cause,
    extra_attempts: int,
    tenant: str | None = None,
) -> Job:
    """Gives a FAILED job ``extra_attempts`` more attempts (the cause names who and why);
    JobError unless FAILED, JobNotFoundError when there is no such job in ``tenant``."""

    return await store.execute(
        job_id,
        existing(lambda job: _of(tenant, job).requeue(cause, extra_attempts=extra_attempts)),
    )


async def owned_job(store: AsyncJobStore, job_id: UUID, tenant: str) -> Job:
    """The job when it exists and is ``tenant``'s; JobNotFoundError (naming only the id)
    otherwise."""
    return _of(tenant, await store.get(job_id))


async def check_rows_job(store: AsyncJobStore, job_id: UUID, tenant: str) -> None:
    """Whether ``tenant`` may ask for the rows naming ``job_id`` (see ``tenants_rows``): its own
    job, or, for the default tenant, an id no job has; JobNotFoundError otherwise."""
    try:
        _of(tenant, await store.get(job_id))
    except JobNotFoundError:
        if tenant != DEFAULT_TENANT:
            raise


async def tenants_rows(
    store: AsyncJobStore, rows: list[dict[str, Any]], tenant: str
) -> list[dict[str, Any]]:
    """The rows (dead letters, quarantined events: each with a ``job_id`` or None) that
    ``tenant`` may see: those of its jobs; a row naming no job of any tenant only to the default
    tenant (the installation's own)."""
    ids = sorted({row["job_id"] for row in rows if row.get("job_id") is not None})
    owners = {job.id: job.tenant for job in await store.get_many(ids)} if ids else {}

    def visible(row: dict[str, Any]) -> bool:
        job_id = row.get("job_id")
        return owners.get(job_id, DEFAULT_TENANT) == tenant if job_id else tenant == DEFAULT_TENANT

    return [row for row in rows if visible(row)]


async def read_job(store: AsyncJobStore, view: RedisView | None, job_id: UUID) -> dict[str, Any]:
    """The job from Redis, or from the log when Redis has no entry or does not answer."""
    cached: dict[str, str] | None = None
    if view is not None:
        try:
            cached = await view.get(job_id)
        except Exception:  # Redis is a cache: any failure means "read the log"
            cached = None
    if cached is not None and "tenant" not in cached:
        cached = None  # written by a projector older than tenants: whose it is, the log says
    if cached is not None:
        job = api_view(cached) | {"source": "cache"}
        if isinstance(job["result"], dict) and job["result"].get("truncated"):
            job["result"] = (await store.get(job_id)).result
        return job
    state = await store.get(job_id)  # raises JobNotFoundError
    return job_view(state) | {"source": "log"}


async def read_job_then(
    store: AsyncJobStore, job_id: UUID, *, at: datetime | None, version: int | None
) -> dict[str, Any]:
    """The job as it was at time ``at`` or after ``version`` events, always from the log."""
    if version is not None:
        state = await store.run_sync(state_at_version, store.store, job_id, version)
    else:
        assert at is not None
        state = await store.run_sync(state_at_time, store.store, job_id, at)
    return job_view(state) | {"source": "log"}


async def history(store: AsyncJobStore, job_id: UUID, tenant: str) -> list[dict[str, Any]]:
    """The job's records (``event_record``: the exports' shape) in version order, from the log;
    JobNotFoundError when there is no such job in ``tenant``."""
    records = await store.run_sync(EventExport(store.store).job_records, job_id)
    first = records[0]
    # a Submitted stored before tenants names none: the default tenant's
    owner = (
        first["data"].get("tenant", DEFAULT_TENANT) if first["event_type"] == "Submitted" else None
    )
    if owner != tenant:
        raise JobNotFoundError(job_id)  # another tenant's (or a history without its Submitted)
    return records
