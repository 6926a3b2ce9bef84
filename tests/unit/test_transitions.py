"""Every (status, move) pair against the transition table, through the aggregate's commands."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.domain import TRANSITIONS, JobError, Move, Status
from shared.domain.job import Job
from tests.jobs import CAUSE, NO_JITTER, NOW, job_in


def _perform(job: Job, move: Move) -> None:
    worker, attempt = job.worker_id or "w1", job.attempt
    actions: dict[Move, Callable[[], None]] = {
        Move.SCHEDULE: lambda: job.schedule(CAUSE, NOW),
        Move.START: lambda: job.start(
            CAUSE, worker_id="w2", attempt=job.attempt + 1, lease_s=30, now=NOW
        ),
        Move.COMPLETE: lambda: job.complete(CAUSE, worker_id=worker, attempt=attempt, result=1),
        Move.RETRY: lambda: job.fail_attempt(
            CAUSE,
            worker_id=worker,
            attempt=attempt,
            error_type="E",
            error_message="m",
            retryable=True,
            now=NOW,
            backoff=NO_JITTER,
        ),
        Move.FAIL: lambda: job.fail_attempt(
            CAUSE,
            worker_id=worker,
            attempt=attempt,
            error_type="E",
            error_message="m",
            retryable=False,
            now=NOW,
            backoff=NO_JITTER,
        ),
        Move.EXPIRE_RETRY: lambda: job.expire_lease(
            CAUSE, attempt=attempt, now=NOW, backoff=NO_JITTER
        ),
        Move.EXPIRE_FAIL: lambda: job.expire_lease(
            CAUSE, attempt=attempt, now=NOW, backoff=NO_JITTER
        ),
        Move.REQUEST_CANCEL: lambda: job.request_cancel(CAUSE),
        Move.CANCEL: (
            (lambda: job.acknowledge_cancel(CAUSE, worker_id=worker, attempt=attempt))
            if job.status is Status.RUNNING
            else (lambda: job.request_cancel(CAUSE))
        ),
        Move.REQUEUE: lambda: job.requeue(
            CAUSE.__class__(actor="operator:ann", correlation_id="c", reason="fixed the bug")
        ),
        Move.QUARANTINE: lambda: job.quarantine(
            CAUSE, version=job.version, notification_id=7, error="causation_id too long"
        ),
    }
    actions[move]()


def _setup(status: Status, move: Move) -> Job:
    # Guards beyond the table (attempts left, cancel asked) are set so only the table decides.
    exhausted = move is Move.EXPIRE_FAIL
    return job_in(
        status,
        max_attempts=1 if exhausted else 3,
        cancel_requested=move is Move.CANCEL and status is Status.RUNNING,
    )


@pytest.mark.parametrize("move", list(Move))
@pytest.mark.parametrize("status", list(Status))
def test_a_move_is_accepted_exactly_when_the_table_has_it(status: Status, move: Move) -> None:
    # Given a job in `status`
    job = _setup(status, move)
    version = job.version
    expected = TRANSITIONS.get((status, move))

    # When the command for `move` runs
    try:
        _perform(job, move)
        error: JobError | None = None
    except JobError as exc:
        error = exc

    # Then it is accepted (one event of that move, to the table's target) iff the table says so
    events = job.collect_events()
    recorded_moves = [e.move() for e in events]  # type: ignore[attr-defined]
    if expected is None:
        assert move not in recorded_moves
        if error is not None:
            assert events == [] and job.version == version and job.status is status
        else:  # request_cancel on a job that is not running cancels it: itself a legal move
            assert recorded_moves == [Move.CANCEL] and (status, Move.CANCEL) in TRANSITIONS
    else:
        assert error is None
        assert recorded_moves == [move]
        assert job.status is expected and job.version == version + 1


def test_the_table_reaches_every_status_and_final_statuses_have_no_exit() -> None:
    # Given the table; when we list its sources and targets
    targets = set(TRANSITIONS.values()) | {Status.PENDING}
    sources = {status for status, _ in TRANSITIONS}
    # Then every status is reachable and only COMPLETED and CANCELLED are dead ends
    assert targets == set(Status)
    assert set(Status) - sources == {Status.COMPLETED, Status.CANCELLED}


def test_a_fenced_out_worker_cannot_record_an_outcome() -> None:
    # Given a job whose first attempt's lease expired and that a second worker now runs
    job = job_in(Status.RUNNING)
    job.expire_lease(CAUSE, attempt=1, now=NOW, backoff=NO_JITTER)
    job.schedule(CAUSE, NOW.replace(year=2030))
    job.start(CAUSE, worker_id="w2", attempt=2, lease_s=30, now=NOW)
    version = job.version
    # When the first worker reports its late result
    with pytest.raises(JobError, match="fenced out"):
        job.complete(CAUSE, worker_id="w1", attempt=1, result="late")
    # Then nothing is recorded
    assert job.version == version and job.status is Status.RUNNING and job.worker_id == "w2"


def test_a_retry_is_not_scheduled_before_it_is_due() -> None:
    # Given a job whose first attempt failed with a 1 s backoff
    job = job_in(Status.RUNNING)
    job.fail_attempt(
        CAUSE,
        worker_id="w1",
        attempt=1,
        error_type="E",
        error_message="m",
        retryable=True,
        now=NOW,
        backoff=NO_JITTER,
    )
    # When the scheduler tries too early, and then on time
    with pytest.raises(JobError, match="due at"):
        job.schedule(CAUSE, NOW)
    job.schedule(CAUSE, job.due_at)  # type: ignore[arg-type]
    # Then only the second is recorded, for attempt 2
    assert job.status is Status.SCHEDULED
    assert [type(e).__name__ for e in job.collect_events()][-2:] == ["AttemptFailed", "Scheduled"]


def test_error_messages_are_bounded() -> None:
    job = job_in(Status.RUNNING)
    job.fail_attempt(
        CAUSE,
        worker_id="w1",
        attempt=1,
        error_type="E" * 1000,
        error_message="x" * 100_000,
        retryable=False,
        now=NOW,
        backoff=NO_JITTER,
    )
    assert job.error is not None
    assert len(job.error["message"]) == 2000 and len(job.error["type"]) == 200


def test_requeue_needs_a_reason_and_records_who_and_why() -> None:
    job = job_in(Status.FAILED)
    with pytest.raises(ValueError, match="reason"):
        job.requeue(CAUSE)
    operator = CAUSE.__class__(actor="operator:ann", correlation_id="c", reason="db fixed")
    job.requeue(operator, extra_attempts=2)
    (event,) = job.collect_events()
    assert (event.actor, event.reason, job.max_attempts) == ("operator:ann", "db fixed", 3)  # type: ignore[attr-defined]


def test_a_quarantine_fails_the_job_only_at_the_poison_version() -> None:
    # Given a PENDING job whose Submitted event (v1) cannot be relayed
    job = job_in(Status.PENDING)
    # When the relay quarantines it at a version the job has moved past, and then at its own
    with pytest.raises(JobError, match="past the poison v0"):
        job.quarantine(CAUSE, version=0, notification_id=3, error="x")
    job.quarantine(CAUSE, version=1, notification_id=3, error="bad \ud800 text")
    # Then only the second is recorded: FAILED, saying why, with no timer left to wait for
    (event,) = job.collect_events()
    assert isinstance(event, Job.Quarantined) and event.ends_job
    assert job.status is Status.FAILED and job.due_at is None
    assert job.error == {"type": "Quarantined", "message": "bad \\ud800 text"}
