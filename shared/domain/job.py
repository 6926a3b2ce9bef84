"""The Job aggregate: commands decide against the transition table, past-tense events record."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate

from shared.domain.backoff import Backoff
from shared.domain.cause import Cause, printable
from shared.domain.errors import (
    IdempotencyConflictError,
    IllegalTransitionError,
    NotDueError,
    StaleAttemptError,
)
from shared.domain.status import INITIAL, MOVE_TARGET, TERMINAL, Move, Status, target

MAX_ERROR_MESSAGE = 2000
MAX_ERROR_TYPE = 200
QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""The bus contract's queue name (contracts.messages.QueueName)."""
_IDEMPOTENCY_NAMESPACE = uuid5(NAMESPACE_URL, "urn:jobtrail:idempotency-key")
DEFAULT_TENANT = "default"
"""The tenant of jobs submitted before tenants existed, and of bus submissions naming none."""
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def job_id_for_key(key: str, tenant: str = DEFAULT_TENANT) -> UUID:
    """Derives the job id from an idempotency key within a tenant, so a repeated submission meets
    its first job and two tenants' equal keys name two jobs. The default tenant keeps the
    derivation of the time before tenants (its stored jobs keep their ids)."""
    if tenant == DEFAULT_TENANT:
        return uuid5(_IDEMPOTENCY_NAMESPACE, key)
    return uuid5(uuid5(_IDEMPOTENCY_NAMESPACE, f"tenant:{tenant}"), key)


def fingerprint(**request: Any) -> str:
    """A SHA-256 over the canonical JSON of a submission, to tell a repeat from a different one."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Job(Aggregate):
    """One job and its whole life. Methods are commands; nested classes are its events."""

    class Event(Aggregate.Event):
        """Every job event records who caused it, why, and the messages it belongs to."""

        actor: str
        correlation_id: str
        causation_id: str | None
        reason: str | None
        trace_id: ClassVar[str | None] = None
        """The trace this event was written in (W3C ids, shared/tracing.py), or None. Not a
        field: set on the event once made (``Job.trigger_event``) and stored only when there is
        one, so an event written without a trace is stored byte for byte as before, and an event
        stored before traces existed reads None."""
        span_id: ClassVar[str | None] = None

        def move(self) -> Move | None:
            return None

        @property
        def ends_job(self) -> bool:
            """Whether this event leaves the job in a terminal status (COMPLETED, FAILED,
            CANCELLED), e.g. a LeaseExpired with no retry left."""
            move = self.move()
            return move is not None and MOVE_TARGET[move] in TERMINAL

        def apply(self, aggregate: Any) -> None:
            job: Job = aggregate
            move = self.move()
            if move is not None:
                job.status = job._target(move)
            job.last_event_at = self.timestamp
            if self.trace_id is not None:
                job.trace_id, job.span_id = self.trace_id, self.span_id
            self.evolve(job)

        def changes(self) -> dict[str, Any]:
            """The job's attributes this event sets, beyond its status and ``last_event_at``: the
            one place that says what an event changes (the fold applies it, the Redis view
            renders it: ``shared.views.delta_view``)."""
            return {}

        def evolve(self, job: Job) -> None:
            """Sets the state this event changes beyond the status: ``changes()``, unless an
            event's change depends on the job (Submitted, Requeued)."""
            for name, value in self.changes().items():
                setattr(job, name, value)

    class Submitted(Event, Aggregate.Created):
        """A job was accepted: PENDING, due at ``run_at`` or at once."""

        job_type: str
        payload: dict[str, Any]
        priority: int
        max_attempts: int
        timeout_s: float
        queue: str
        run_at: datetime | None
        idempotency_key: str | None
        tenant: str = DEFAULT_TENANT
        """Whose job it is (the submitting key's tenant). Events stored before tenants existed
        have no such field: they read the default (a class attribute), no upcast needed."""

        def apply(self, aggregate: Any) -> None:
            job: Job = aggregate
            job.status = INITIAL
            job.tenant = self.tenant
            job.job_type, job.payload = self.job_type, self.payload
            job.priority, job.max_attempts = self.priority, self.max_attempts
            job.timeout_s, job.queue = self.timeout_s, self.queue
            job.run_at, job.idempotency_key = self.run_at, self.idempotency_key
            job.due_at = self.run_at
            job.attempt = 0
            job.worker_id = job.lease_expires_at = job.result = job.error = None
            job.cancel_requested = False
            job.submitted_by = self.actor
            job.last_event_at = self.timestamp
            if self.trace_id is not None:
                job.trace_id, job.span_id = self.trace_id, self.span_id

    class Scheduled(Event):
        """The job was dispatched to a worker queue for attempt ``attempt``."""

        queue: str
        priority: int
        attempt: int

        def move(self) -> Move:
            return Move.SCHEDULE

        def changes(self) -> dict[str, Any]:
            return {"due_at": None}

    class Started(Event):
        """A worker claimed the job for ``attempt`` and holds it until ``lease_expires_at``.

        ``lease_expires_at`` is on the worker's clock, for readers; the lease that counts is the
        ``jobtrail_leases`` row, whose expiry PostgreSQL derives on its own clock from the lease's
        length (``lease_expires_at - timestamp``). A cancel request is addressed to one attempt,
        so a new attempt starts with none (as its lease row does).
        """

        worker_id: str
        attempt: int
        lease_expires_at: datetime

        def move(self) -> Move:
            return Move.START

        def changes(self) -> dict[str, Any]:
            return {
                "attempt": self.attempt,
                "worker_id": self.worker_id,
                "lease_expires_at": self.lease_expires_at,
                "cancel_requested": False,
            }

    class Completed(Event):
        """The running attempt finished with ``result``."""

        worker_id: str
        attempt: int
        result: Any

        def move(self) -> Move:
            return Move.COMPLETE

        def changes(self) -> dict[str, Any]:
            return {"result": self.result, "lease_expires_at": None}

    class AttemptFailed(Event):
        """The running attempt raised; the job is PENDING again, due at ``retry_at``."""

        worker_id: str
        attempt: int
        error_type: str
        error_message: str
        retry_at: datetime

        def move(self) -> Move:
            return Move.RETRY

        def changes(self) -> dict[str, Any]:
            return {
                "error": {"type": self.error_type, "message": self.error_message},
                "due_at": self.retry_at,
                "worker_id": None,
                "lease_expires_at": None,
            }

    class Failed(Event):
        """The last attempt raised, or raised a non-retryable error: the job is FAILED."""

        worker_id: str | None
        attempt: int
        error_type: str
        error_message: str

        def move(self) -> Move:
            return Move.FAIL

        def changes(self) -> dict[str, Any]:
            return {
                "error": {"type": self.error_type, "message": self.error_message},
                "lease_expires_at": None,
            }

    class LeaseExpired(Event):
        """The lease ran out (worker lost, or timed out): a retry at ``retry_at``, or FAILED."""

        worker_id: str | None
        attempt: int
        retry_at: datetime | None

        def move(self) -> Move:
            return Move.EXPIRE_FAIL if self.retry_at is None else Move.EXPIRE_RETRY

        def changes(self) -> dict[str, Any]:
            return {
                "error": {"type": "LeaseExpired", "message": f"lease of {self.worker_id} expired"},
                "due_at": self.retry_at,
                "worker_id": None,
                "lease_expires_at": None,
            }

    class CancelRequested(Event):
        """Cancel was asked of a running job; the worker stops cooperatively."""

        def move(self) -> Move:
            return Move.REQUEST_CANCEL

        def changes(self) -> dict[str, Any]:
            return {"cancel_requested": True}

    class Cancelled(Event):
        """The job was cancelled; ``worker_id`` is set when a running worker acknowledged it.

        Right after an AttemptFailed or LeaseExpired in the same command (``worker_id`` None) it
        ends a job whose cancel was requested of the attempt that just ended, instead of a retry.
        """

        worker_id: str | None

        def move(self) -> Move:
            return Move.CANCEL

        def changes(self) -> dict[str, Any]:
            return {"lease_expires_at": None}

    class Requeued(Event):
        """An operator gave a FAILED job ``extra_attempts`` more attempts."""

        extra_attempts: int

        def move(self) -> Move:
            return Move.REQUEUE

        def evolve(self, job: Job) -> None:
            job.max_attempts = job.attempt + self.extra_attempts
            job.due_at, job.cancel_requested = None, False

    class Quarantined(Event):
        """Event ``notification_id`` of this job can never become a bus message (``error``), so
        no service would ever act on it: the job is FAILED instead of waiting for good."""

        notification_id: int
        error_message: str

        def move(self) -> Move:
            return Move.QUARANTINE

        def changes(self) -> dict[str, Any]:
            return {
                "error": {"type": "Quarantined", "message": self.error_message},
                "due_at": None,
                "lease_expires_at": None,
            }

    # State set by the events above (declared here for readers and type checkers).
    status: Status
    job_type: str
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    timeout_s: float
    queue: str
    run_at: datetime | None
    idempotency_key: str | None
    due_at: datetime | None
    attempt: int
    worker_id: str | None
    lease_expires_at: datetime | None
    result: Any
    error: dict[str, str] | None
    cancel_requested: bool
    submitted_by: str
    tenant: str
    last_event_at: datetime
    trace_id: str | None = None
    """The trace of the job's latest traced event (what a timer's dispatch continues)."""
    span_id: str | None = None

    def __init__(self) -> None:
        """State comes from Submitted.apply; the aggregate takes no constructor arguments."""

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        """eventsourcing's, plus the cause's trace ids (``Cause.meta``) set on the new event."""
        trace_id, span_id = kwargs.pop("trace_id", None), kwargs.pop("span_id", None)
        super().trigger_event(event_class, **kwargs)
        if trace_id is not None:
            self._stamp_trace(trace_id, span_id)

    def _stamp_trace(self, trace_id: str, span_id: str | None) -> None:
        event = self.pending_events[-1]
        object.__setattr__(event, "trace_id", trace_id)  # a frozen dataclass; not a field
        object.__setattr__(event, "span_id", span_id)
        self.trace_id, self.span_id = trace_id, span_id

    # -- commands -------------------------------------------------------------------------------

    @classmethod
    def submit(
        cls,
        cause: Cause,
        *,
        job_type: str,
        payload: dict[str, Any],
        priority: int = 5,
        max_attempts: int = 3,
        timeout_s: float = 300.0,
        queue: str = "default",
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        job_id: UUID | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> Job:
        """Creates a PENDING job of ``tenant``; its id comes from the idempotency key (within the
        tenant) when there is one."""
        if not 0 <= priority <= 9:
            raise ValueError("priority must be within 0..9")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if not QUEUE_NAME.fullmatch(queue):  # it routes every work message of the job
            raise ValueError(f"queue must match {QUEUE_NAME.pattern}")
        if run_at is not None and run_at.tzinfo is None:
            raise ValueError("run_at must carry a time zone")
        if not TENANT_NAME.fullmatch(tenant):
            raise ValueError(f"tenant must match {TENANT_NAME.pattern}")
        if job_id is None:
            job_id = job_id_for_key(idempotency_key, tenant) if idempotency_key else uuid4()
        meta = cause.meta()
        trace_id, span_id = meta.pop("trace_id", None), meta.pop("span_id", None)
        job = cls._create(
            cls.Submitted,
            id=job_id,
            job_type=job_type,
            payload=payload,
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            queue=queue,
            run_at=run_at,
            idempotency_key=idempotency_key,
            tenant=tenant,
            **meta,
        )
        if trace_id is not None:
            job._stamp_trace(trace_id, span_id)
        return job

    def schedule(
        self, cause: Cause, now: datetime | None = None, *, version: int | None = None
    ) -> None:
        """Dispatches a due PENDING job for its next attempt.

        ``now``: raises NotDueError before ``due_at``; only meaningful on the clock ``due_at`` was
        written on, so the scheduler passes None and relies on the timer table (PostgreSQL's
        clock) or on the event having been due when written. ``version``: refuses the job if it
        has moved since that version (a stale or duplicate bus message must not dispatch a later
        retry before its time). A job whose cancel was requested is never dispatched: it is
        cancelled instead (histories written before a cancel ended the attempt carry the request
        into PENDING).
        """
        self._target(Move.SCHEDULE)
        if version is not None and version != self.version:
            raise StaleAttemptError(self.id, f"moved on since version {version}")
        if now is not None and self.due_at is not None and self.due_at > now:
            raise NotDueError(f"job {self.id} is due at {self.due_at.isoformat()}")
        if self.cancel_requested:
            self._cancel_after_attempt(cause)
            return
        self.trigger_event(
            self.Scheduled,
            queue=self.queue,
            priority=self.priority,
            attempt=self.attempt + 1,
            **cause.meta(),
        )

    def dispatch_if_due(self, cause: Cause) -> bool:
        """Dispatches a PENDING job that was due when its last event was written: no ``due_at``,
        or one not after that event's time (both on the writer's clock, the rule the scheduler's
        bus subscriber applies). The submitter calls it in the transaction that accepts a job,
        so a job due at once is Submitted and Scheduled in one commit, with no hop through the
        scheduler; a job due later is left to its timer. Returns whether it dispatched."""
        if self.status is not Status.PENDING or self.cancel_requested:
            return False
        if self.due_at is not None and self.due_at > self.last_event_at:
            return False
        self.schedule(cause)
        return True

    def start(
        self, cause: Cause, *, worker_id: str, attempt: int, lease_s: float, now: datetime
    ) -> None:
        """Claims the SCHEDULED job for ``attempt``; a stale or duplicate claim is refused."""
        self._target(Move.START)
        if attempt != self.attempt + 1:
            raise StaleAttemptError(self.id, f"attempt {attempt} is not the scheduled one")
        self.trigger_event(
            self.Started,
            worker_id=worker_id,
            attempt=attempt,
            lease_expires_at=now + timedelta(seconds=lease_s),
            **cause.meta(),
        )

    def complete(self, cause: Cause, *, worker_id: str, attempt: int, result: Any) -> None:
        """Records the outcome of the running attempt, if ``worker_id`` still holds it."""
        self._fence(worker_id, attempt)
        self._target(Move.COMPLETE)
        self.trigger_event(
            self.Completed, worker_id=worker_id, attempt=attempt, result=result, **cause.meta()
        )

    def fail_attempt(
        self,
        cause: Cause,
        *,
        worker_id: str,
        attempt: int,
        error_type: str,
        error_message: str,
        retryable: bool,
        now: datetime,
        backoff: Backoff,
    ) -> None:
        """Records a failed attempt: a retry after backoff while attempts remain, else FAILED.

        A retry of an attempt whose cancel was requested is followed at once by Cancelled, in the
        same command: no scheduler can dispatch it in between.
        """
        self._fence(worker_id, attempt)
        error = {
            "error_type": error_type[:MAX_ERROR_TYPE],
            "error_message": error_message[:MAX_ERROR_MESSAGE],
        }
        if retryable and attempt < self.max_attempts:
            self._target(Move.RETRY)
            retry_at = now + timedelta(seconds=backoff.delay(attempt))
            cancel = self.cancel_requested
            self.trigger_event(
                self.AttemptFailed,
                worker_id=worker_id,
                attempt=attempt,
                retry_at=retry_at,
                **error,
                **cause.meta(),
            )
            if cancel:
                self._cancel_after_attempt(cause)
        else:
            self._target(Move.FAIL)
            self.trigger_event(
                self.Failed, worker_id=worker_id, attempt=attempt, **error, **cause.meta()
            )

    def expire_lease(self, cause: Cause, *, attempt: int, now: datetime, backoff: Backoff) -> None:
        """Takes a running attempt from its lost worker: a retry, or FAILED when none remain.

        When a cancel was requested of that attempt, the retry is followed at once by Cancelled:
        the worker died (or stalled) before it could acknowledge the cancel, and the job must not
        run again.
        """
        if self.status is Status.RUNNING and attempt != self.attempt:
            raise StaleAttemptError(self.id, f"attempt {attempt} is not the running one")
        retry_at = None
        if attempt < self.max_attempts:
            self._target(Move.EXPIRE_RETRY)
            retry_at = now + timedelta(seconds=backoff.delay(attempt))
        else:
            self._target(Move.EXPIRE_FAIL)
        cancel = self.cancel_requested and retry_at is not None
        self.trigger_event(
            self.LeaseExpired,
            worker_id=self.worker_id,
            attempt=attempt,
            retry_at=retry_at,
            **cause.meta(),
        )
        if cancel:
            self._cancel_after_attempt(cause)

    def request_cancel(self, cause: Cause) -> None:
        """Cancels a job that is not running; asks a running one to stop (once per attempt: a
        new attempt starts with no request)."""
        if self.status is Status.RUNNING:
            if not self.cancel_requested:
                self.trigger_event(self.CancelRequested, **cause.meta())
            return
        self._target(Move.CANCEL)
        self.trigger_event(self.Cancelled, worker_id=None, **cause.meta())

    def _cancel_after_attempt(self, cause: Cause) -> None:
        """Ends a PENDING job whose cancel was requested of its last attempt (no retry)."""
        self._target(Move.CANCEL)
        reason = f"cancel requested of attempt {self.attempt}; not retried"
        self.trigger_event(self.Cancelled, worker_id=None, **replace(cause, reason=reason).meta())

    def acknowledge_cancel(self, cause: Cause, *, worker_id: str, attempt: int) -> None:
        """The worker running the job stopped at a cancel request."""
        self._fence(worker_id, attempt)
        if not self.cancel_requested:
            raise IllegalTransitionError(self.id, self.status, "cancel (not requested)")
        self._target(Move.CANCEL)
        self.trigger_event(self.Cancelled, worker_id=worker_id, **cause.meta())

    def requeue(self, cause: Cause, *, extra_attempts: int = 1) -> None:
        """Gives a FAILED job more attempts; an operator and a reason are required."""
        if not cause.reason:
            raise ValueError("a requeue needs a reason")
        if extra_attempts < 1:
            raise ValueError("extra_attempts must be >= 1")
        self._target(Move.REQUEUE)
        self.trigger_event(self.Requeued, extra_attempts=extra_attempts, **cause.meta())

    def quarantine(self, cause: Cause, *, version: int, notification_id: int, error: str) -> None:
        """FAILs a PENDING or SCHEDULED job whose event at ``version`` cannot be relayed; refused
        (StaleAttemptError) when the job has moved past that event, which then did no harm."""
        if version != self.version:
            raise StaleAttemptError(self.id, f"is at v{self.version}, past the poison v{version}")
        self._target(Move.QUARANTINE)
        self.trigger_event(
            self.Quarantined,
            notification_id=notification_id,
            error_message=printable(error)[:MAX_ERROR_MESSAGE],
            **cause.meta(),
        )

    # -- queries --------------------------------------------------------------------------------

    def request_fingerprint(self) -> str:
        """The fingerprint of the submission that created this job."""
        return fingerprint(
            job_type=self.job_type,
            payload=self.payload,
            priority=self.priority,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            queue=self.queue,
            run_at=self.run_at,
        )

    @classmethod
    def submit_once(cls, current: Job | None, cause: Cause, **request: Any) -> Job:
        """Submits, or returns ``current`` when it was created by the same request (same key).

        Raises IdempotencyConflictError when the key's job was created by a different request.
        """
        candidate = cls.submit(cause, **request)  # never saved: its defaults and validation
        if current is None:
            return candidate
        if (
            candidate.request_fingerprint() != current.request_fingerprint()
            or candidate.tenant != current.tenant  # ids are per tenant: never met in practice
        ):
            raise IdempotencyConflictError(str(request.get("idempotency_key")), current.id)
        return current

    def _target(self, move: Move) -> Status:
        to = target(self.status, move)
        if to is None:
            raise IllegalTransitionError(self.id, self.status, move)
        return to

    def _fence(self, worker_id: str, attempt: int) -> None:
        if attempt != self.attempt or worker_id != self.worker_id:
            raise StaleAttemptError(
                self.id,
                f"{worker_id} attempt {attempt} is fenced out "
                f"(attempt {self.attempt} belongs to {self.worker_id})",
            )
