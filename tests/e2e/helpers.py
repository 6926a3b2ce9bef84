"""Waiting and checking helpers for end-to-end tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import TypeVar

from shared.domain import Job
from shared.domain.status import TERMINAL
from shared.eventstore import JobStore
from tests.chaos.checker import duplicated, illegal

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
    """Polls ``check`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def settle(
    store: JobStore, ids: Iterable[uuid.UUID], timeout: float = 120.0
) -> dict[uuid.UUID, Job]:
    """Waits until every job is COMPLETED, FAILED or CANCELLED; returns them."""
    wanted = set(ids)

    def all_terminal() -> dict[uuid.UUID, Job] | None:
        jobs = {job.id: job for job in store.get_many(sorted(wanted))}
        if len(jobs) == len(wanted) and all(j.status in TERMINAL for j in jobs.values()):
            return jobs
        return None

    def pending() -> str:
        jobs = store.get_many(sorted(wanted))
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return f"all {len(wanted)} jobs to end (now {counts})"

    try:
        return wait_for(all_terminal, timeout, "jobs to settle", every=0.25)
    except AssertionError:
        raise AssertionError(pending()) from None


def assert_legal_history(store: JobStore, job_id: uuid.UUID) -> list[Job.Event]:
    """Versions 1..n, every move legal, and no outcome recorded twice (the checker's rules)."""
    events = store.history(job_id)
    assert illegal(events) is None, illegal(events)
    assert duplicated(events) is None, duplicated(events)
    return events
