"""The checker catches each kind of broken history (it must be able to fail)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from shared.domain import Job, Status
from shared.drift import expected_view
from tests.chaos.checker import check
from tests.jobs import CAUSE, NO_JITTER, NOW


def completed() -> tuple[Job, list[Job.Event]]:
    job = Job.submit(CAUSE, job_type="t", payload={})
    job.schedule(CAUSE, NOW)
    job.start(CAUSE, worker_id="w1", attempt=1, lease_s=5, now=NOW)
    job.complete(CAUSE, worker_id="w1", attempt=1, result=1)
    return job, list(job.collect_events())  # type: ignore[arg-type]


def view(job: Job) -> dict[str, str]:
    return expected_view(job)


def run(events: list[Job.Event], cached: dict[str, str] | None, runs: list[int] | None = None):  # type: ignore[no-untyped-def]
    job_id = events[0].originator_id
    return check(
        {job_id: events}, [job_id], {job_id: cached} if cached else {}, {str(job_id): runs or [1]}
    )


def test_a_clean_history_is_clean() -> None:
    job, events = completed()
    report = run(events, view(job))
    assert report.clean and report.jobs == 1 and report.executions == 1


def test_a_gap_in_versions_is_illegal() -> None:
    job, events = completed()
    report = run([events[0], events[1], events[3]], view(job))
    assert report.illegal == 1, report.details


def test_two_final_events_are_duplicated() -> None:
    job, events = completed()
    again = dataclasses.replace(events[-1], originator_version=5)
    assert run([*events, again], view(job)).duplicated == 1


def test_an_outcome_by_a_fenced_out_worker_is_duplicated() -> None:
    job = Job.submit(CAUSE, job_type="t", payload={})
    job.schedule(CAUSE, NOW)
    job.start(CAUSE, worker_id="w1", attempt=1, lease_s=5, now=NOW)
    job.expire_lease(CAUSE, attempt=1, now=NOW, backoff=NO_JITTER)
    job.schedule(CAUSE, NOW.replace(year=2030))
    job.start(CAUSE, worker_id="w2", attempt=2, lease_s=5, now=NOW)
    events = list(job.collect_events())
    # w1's late result, written behind the domain's back as attempt 2's outcome
    forged = Job.Completed(
        originator_id=job.id,
        originator_version=job.version + 1,
        timestamp=NOW,
        actor="w1",
        correlation_id="c",
        causation_id=None,
        reason=None,
        worker_id="w1",
        attempt=2,
        result="late",
    )
    report = run([*events, forged], None, runs=[1, 2])  # type: ignore[list-item]
    assert report.duplicated == 1, report.details


def test_a_stale_redis_entry_is_drift() -> None:
    job, events = completed()
    stale = view(job) | {"status": str(Status.RUNNING), "version": "3"}
    assert run(events, stale).drift == 1
    assert run(events, None).drift == 1  # missing entirely


def test_where_redis_may_evict_a_missing_entry_is_evicted_but_a_stale_one_is_drift() -> None:
    job, events = completed()
    job_id = job.id
    runs = {str(job_id): [1]}
    missing = check({job_id: events}, [job_id], {}, runs, evictable=True)
    assert missing.clean and missing.evicted == 1
    stale = view(job) | {"status": "RUNNING"}
    assert check({job_id: events}, [job_id], {job_id: stale}, runs, evictable=True).drift == 1


def test_an_unfinished_job_is_lost_and_a_missing_one_too() -> None:
    events = list(Job.submit(CAUSE, job_type="t", payload={}).collect_events())
    assert run(events, None).lost == 1  # PENDING forever
    ghost = uuid.uuid4()
    assert check({}, [ghost], {}, {}).lost == 1


@pytest.mark.parametrize("runs", [[1, 1], [2]])
def test_a_run_the_history_cannot_explain_is_counted(runs: list[int]) -> None:
    job, events = completed()
    assert run(events, view(job), runs).unexplained == 1
