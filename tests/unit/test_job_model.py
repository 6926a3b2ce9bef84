"""Random command sequences against a reference model of the job's life cycle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from eventsourcing.application import project_aggregate
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shared.domain import Cause, Job, JobError, Status
from shared.eventstore.commands import fold
from tests.jobs import CAUSE, NO_JITTER, NOW

WORKERS = st.sampled_from(["w1", "w2"])
OFFSETS = st.sampled_from([-1, 0, 1])
OPERATOR = Cause(actor="operator:ann", correlation_id="c", reason="retry after fix")


@dataclass
class Model:
    """The life cycle written as plainly as possible, independent of the table."""

    status: Status = Status.PENDING
    attempt: int = 0
    max_attempts: int = 2
    worker: str | None = None
    cancel_requested: bool = False

    def owns(self, worker: str, attempt: int) -> bool:
        return worker == self.worker and attempt == self.attempt


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.job = Job.submit(CAUSE, job_type="t", payload={}, max_attempts=2)
        self.model = Model()
        self.events = list(self.job.collect_events())
        self.now = NOW

    def _run(self, expect_ok: bool, action: object) -> None:
        version = self.job.version
        try:
            action()  # type: ignore[operator]
        except JobError:
            assert not expect_ok, "aggregate refused a move the model allows"
            assert self.job.version == version and not self.job.pending_events
        else:
            assert expect_ok, "aggregate accepted a move the model forbids"
        self.events += self.job.collect_events()

    @rule()
    def schedule(self) -> None:
        self.now += timedelta(hours=1)  # always past any backoff
        ok = self.model.status is Status.PENDING
        self._run(ok, lambda: self.job.schedule(CAUSE, self.now))
        if ok:
            self.model.status = Status.SCHEDULED

    @rule(worker=WORKERS, offset=OFFSETS)
    def start(self, worker: str, offset: int) -> None:
        attempt = self.model.attempt + 1 + offset
        ok = self.model.status is Status.SCHEDULED and offset == 0
        self._run(
            ok,
            lambda: self.job.start(
                CAUSE, worker_id=worker, attempt=attempt, lease_s=5, now=self.now
            ),
        )
        if ok:
            self.model.status, self.model.attempt, self.model.worker = (
                Status.RUNNING,
                attempt,
                worker,
            )
            self.model.cancel_requested = False  # a request is addressed to one attempt

    @rule(worker=WORKERS, offset=OFFSETS)
    def complete(self, worker: str, offset: int) -> None:
        attempt = self.model.attempt + offset
        ok = self.model.status is Status.RUNNING and self.model.owns(worker, attempt)
        self._run(ok, lambda: self.job.complete(CAUSE, worker_id=worker, attempt=attempt, result=1))
        if ok:
            self.model.status = Status.COMPLETED

    @rule(worker=WORKERS, offset=OFFSETS, retryable=st.booleans())
    def fail(self, worker: str, offset: int, retryable: bool) -> None:
        attempt = self.model.attempt + offset
        ok = self.model.status is Status.RUNNING and self.model.owns(worker, attempt)
        self._run(
            ok,
            lambda: self.job.fail_attempt(
                CAUSE,
                worker_id=worker,
                attempt=attempt,
                error_type="E",
                error_message="m",
                retryable=retryable,
                now=self.now,
                backoff=NO_JITTER,
            ),
        )
        if ok:
            retry = retryable and attempt < self.model.max_attempts
            self.model.status = Status.PENDING if retry else Status.FAILED
            if retry and self.model.cancel_requested:  # a cancelled attempt is not retried
                self.model.status = Status.CANCELLED
            self.model.worker = None

    @rule(offset=OFFSETS)
    def expire(self, offset: int) -> None:
        attempt = self.model.attempt + offset
        ok = self.model.status is Status.RUNNING and attempt == self.model.attempt
        self._run(
            ok,
            lambda: self.job.expire_lease(CAUSE, attempt=attempt, now=self.now, backoff=NO_JITTER),
        )
        if ok:
            retry = attempt < self.model.max_attempts
            self.model.status = Status.PENDING if retry else Status.FAILED
            if retry and self.model.cancel_requested:
                self.model.status = Status.CANCELLED
            self.model.worker = None

    @rule()
    def request_cancel(self) -> None:
        status = self.model.status
        ok = status in (Status.PENDING, Status.SCHEDULED, Status.RUNNING)
        self._run(ok, lambda: self.job.request_cancel(CAUSE))
        if ok and status is Status.RUNNING:
            self.model.cancel_requested = True
        elif ok:
            self.model.status = Status.CANCELLED

    @precondition(lambda self: self.model.status is Status.RUNNING)
    @rule()
    def request_cancel_of_the_running_attempt(self) -> None:
        """The same command as request_cancel, drawn only while RUNNING: a cancel that then meets
        a failure or an expired lease is otherwise too rare for the search to find."""
        self.request_cancel()

    @rule(worker=WORKERS)
    def acknowledge_cancel(self, worker: str) -> None:
        m = self.model
        ok = m.status is Status.RUNNING and m.cancel_requested and m.owns(worker, m.attempt)
        self._run(
            ok, lambda: self.job.acknowledge_cancel(CAUSE, worker_id=worker, attempt=m.attempt)
        )
        if ok:
            m.status = Status.CANCELLED

    @rule()
    def requeue(self) -> None:
        ok = self.model.status is Status.FAILED
        self._run(ok, lambda: self.job.requeue(OPERATOR))
        if ok:
            self.model.status = Status.PENDING
            self.model.max_attempts = self.model.attempt + 1
            self.model.cancel_requested = False

    @rule(offset=OFFSETS)
    def quarantine(self, offset: int) -> None:
        version = self.job.version + offset
        ok = self.model.status in (Status.PENDING, Status.SCHEDULED) and offset == 0
        self._run(
            ok,
            lambda: self.job.quarantine(CAUSE, version=version, notification_id=1, error="e"),
        )
        if ok:
            self.model.status = Status.FAILED

    @invariant()
    def agrees_with_model_and_replays_from_its_events(self) -> None:
        assert self.job.status is self.model.status
        assert self.job.attempt == self.model.attempt
        assert self.job.cancel_requested == self.model.cancel_requested
        # a cancel request never outlives its attempt into a job that could run again
        assert not (self.job.cancel_requested and self.job.status is Status.PENDING)
        assert [e.originator_version for e in self.events] == list(range(1, len(self.events) + 1))
        replayed = project_aggregate(None, self.events)
        assert replayed == self.job
        assert fold(self.events) == self.job  # the store's fold: the same job
        assert fold(self.events[-1:], fold(self.events[:-1])) == self.job


TestJobMachine = JobMachine.TestCase
TestJobMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
