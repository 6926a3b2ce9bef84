"""A job due at once is Submitted and Scheduled in one command: no hop through the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from contracts.messages import SubmitJob
from services.submitter.handlers import prepare
from shared.domain import Job, Status
from shared.jobtypes import JobType, Registry
from tests.jobs import CAUSE


def test_a_job_due_at_once_is_dispatched_in_the_command_that_accepts_it() -> None:
    job = Job.submit(CAUSE, job_type="t", payload={}, queue="q", priority=7)
    assert job.dispatch_if_due(CAUSE)
    submitted, scheduled = job.collect_events()
    assert isinstance(submitted, Job.Submitted) and isinstance(scheduled, Job.Scheduled)
    assert (scheduled.queue, scheduled.priority, scheduled.attempt) == ("q", 7, 1)
    assert (job.status, job.version) == (Status.SCHEDULED, 2)


def test_a_run_at_in_the_past_is_due_and_one_in_the_future_is_left_to_the_timer() -> None:
    now = datetime.now(UTC)
    past = Job.submit(CAUSE, job_type="t", payload={}, run_at=now - timedelta(seconds=1))
    future = Job.submit(CAUSE, job_type="t", payload={}, run_at=now + timedelta(hours=1))
    assert past.dispatch_if_due(CAUSE) and past.status is Status.SCHEDULED
    assert not future.dispatch_if_due(CAUSE) and future.status is Status.PENDING
    assert len(future.collect_events()) == 1


def test_only_a_pending_job_is_dispatched() -> None:
    job = Job.submit(CAUSE, job_type="t", payload={})
    assert job.dispatch_if_due(CAUSE)
    assert not job.dispatch_if_due(CAUSE)  # SCHEDULED already: nothing more
    assert len(job.collect_events()) == 2


class Empty(BaseModel):
    pass


def test_the_submit_command_dispatches_a_new_job_and_not_a_repeat() -> None:
    registry = Registry()
    registry.add(JobType("t", lambda payload: None, payload=Empty, result=None))
    request = SubmitJob(type="t", payload={}, idempotency_key="k-1")
    submission = prepare(request, registry, {"default"}, CAUSE)
    first = submission.command(None)
    assert [type(e).__name__ for e in first.collect_events()] == ["Submitted", "Scheduled"]
    again = submission.command(first)  # the same request meets its job: no new event
    assert again is first and again.collect_events() == []
