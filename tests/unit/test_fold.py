"""The store's fold (shared/eventstore/store.py) keeps eventsourcing's version checks: an event
that does not follow the job's version is refused, never applied. That it gives the same job as
``project_aggregate`` is checked on every step of the job state machine (test_job_model.py)."""

from __future__ import annotations

import pytest
from eventsourcing.domain import OriginatorVersionError

from shared.domain import Job
from shared.eventstore.commands import fold
from tests.jobs import CAUSE, NOW


def _history() -> list[Job.Event]:
    job = Job.submit(CAUSE, job_type="t", payload={"n": 1})
    job.schedule(CAUSE)
    job.start(CAUSE, worker_id="W", attempt=1, lease_s=30, now=NOW)
    job.complete(CAUSE, worker_id="W", attempt=1, result={"ok": True})
    return list(job.collect_events())


def test_fold_applies_a_history_in_order() -> None:
    events = _history()
    job = fold(events)
    assert job is not None
    assert (job.version, job.status.value, job.result) == (4, "COMPLETED", {"ok": True})
    assert fold([]) is None


def test_fold_refuses_a_gap_in_versions() -> None:
    events = _history()
    with pytest.raises(OriginatorVersionError):
        fold([events[0], events[2]])


def test_fold_refuses_an_event_applied_twice() -> None:
    events = _history()
    with pytest.raises(OriginatorVersionError):
        fold([*events[:2], events[1]])
