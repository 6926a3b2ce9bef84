"""A cancel requested of a running attempt ends the job, whatever ends that attempt."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain import Job, JobError, Status
from shared.views import delta_view
from tests.jobs import CAUSE, NO_JITTER, NOW, fail, job_in


def _names(events: list[Job.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def _running_with_cancel() -> Job:
    job = job_in(Status.RUNNING, cancel_requested=True)
    assert job.cancel_requested
    return job


def test_a_lease_that_expires_after_a_cancel_request_ends_the_job_cancelled() -> None:
    # Given a running job whose cancel was requested, and whose worker then died
    job = _running_with_cancel()
    # When its lease expires with attempts left
    job.expire_lease(CAUSE, attempt=1, now=NOW, backoff=NO_JITTER)
    # Then the same command records the expiry and Cancelled: nothing left to schedule
    events = job.collect_events()
    assert _names(events) == ["LeaseExpired", "Cancelled"]  # type: ignore[arg-type]
    assert job.status is Status.CANCELLED
    cancelled = events[-1]
    assert isinstance(cancelled, Job.Cancelled) and cancelled.worker_id is None
    assert cancelled.reason == "cancel requested of attempt 1; not retried"
    with pytest.raises(JobError):
        job.schedule(CAUSE, NOW + timedelta(hours=1))


def test_an_attempt_that_fails_after_a_cancel_request_is_not_retried() -> None:
    # Given a running job whose cancel was requested; its handler raised instead of stopping
    job = _running_with_cancel()
    # When the worker records the failure (retryable, attempts left)
    fail(job)
    # Then the failure is kept and the job ends CANCELLED
    assert _names(job.collect_events()) == ["AttemptFailed", "Cancelled"]  # type: ignore[arg-type]
    assert job.status is Status.CANCELLED and job.error == {"type": "E", "message": "m"}


def test_a_last_attempt_keeps_its_own_ending() -> None:
    # Given running jobs on their last attempt whose cancel was requested
    expired, failed = (_running_with_cancel(), _running_with_cancel())
    expired.max_attempts = failed.max_attempts = 1
    # When the lease expires, or the attempt fails
    expired.expire_lease(CAUSE, attempt=1, now=NOW, backoff=NO_JITTER)
    fail(failed)
    # Then each ends FAILED as before: it never reaches PENDING, so there is nothing to stop
    assert _names(expired.collect_events()) == ["LeaseExpired"]  # type: ignore[arg-type]
    assert _names(failed.collect_events()) == ["Failed"]  # type: ignore[arg-type]
    assert expired.status is failed.status is Status.FAILED


def test_a_pending_job_carrying_a_cancel_request_is_cancelled_not_scheduled() -> None:
    # Given a history written before this fix: cancel requested, then a plain retry
    job = _running_with_cancel()
    job.trigger_event(Job.LeaseExpired, worker_id="w1", attempt=1, retry_at=NOW, **CAUSE.meta())
    job.collect_events()
    assert job.status is Status.PENDING and job.cancel_requested
    # When the scheduler dispatches it
    job.schedule(CAUSE)
    # Then it is cancelled instead of run again
    assert _names(job.collect_events()) == ["Cancelled"]  # type: ignore[arg-type]
    assert job.status is Status.CANCELLED


def test_a_new_attempt_starts_without_a_cancel_request_and_a_cancel_of_it_is_recorded() -> None:
    # Given a legacy history: a cancel requested of attempt 1, whose lease then expired with a
    # retry and no Cancelled (written before a cancel ended its attempt), and attempt 2 dispatched
    # (by a scheduler of that time), all built by hand: the request is still on the job
    job = _running_with_cancel()
    job.trigger_event(
        Job.LeaseExpired,
        worker_id="w1",
        attempt=1,
        retry_at=NOW + timedelta(seconds=1),
        **CAUSE.meta(),
    )
    job.trigger_event(
        Job.Scheduled, queue=job.queue, priority=job.priority, attempt=2, **CAUSE.meta()
    )
    assert job.status is Status.SCHEDULED and job.cancel_requested
    job.collect_events()
    # When attempt 2 starts
    job.start(CAUSE, worker_id="w2", attempt=2, lease_s=30, now=NOW)
    # Then it starts without the request of attempt 1, and the Redis delta says so too
    assert not job.cancel_requested
    (started,) = job.collect_events()
    assert (delta_view(started) or {})["cancel_requested"] == "0"  # type: ignore[arg-type]
    # And a cancel requested of the new attempt is recorded (the lease row is flagged from it)
    job.request_cancel(CAUSE)
    assert _names(job.collect_events()) == ["CancelRequested"]  # type: ignore[arg-type]


def test_schedule_refuses_a_stale_bus_message() -> None:
    # Given a job whose first attempt failed, PENDING until its backoff has passed
    job = job_in(Status.RUNNING)
    fail(job)
    # When a duplicate of its Submitted message (version 1) asks to dispatch it
    with pytest.raises(JobError, match="since version 1"):
        job.schedule(CAUSE, version=1)
    # Then nothing is recorded; the message of its current version is accepted
    job.collect_events()
    job.schedule(CAUSE, version=job.version)
    assert job.status is Status.SCHEDULED and job.attempt == 1
