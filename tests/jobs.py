"""Builders for jobs in a given status, shared by unit and integration tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain import Backoff, Cause, Job, Status

CAUSE = Cause(actor="test:builder", correlation_id="corr-test")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
NO_JITTER = Backoff(base_s=1.0, factor=2.0, cap_s=60.0, jitter=0.0)


def job_in(
    status: Status, *, max_attempts: int = 3, cancel_requested: bool = False, **submit: Any
) -> Job:
    """A job brought to ``status`` through legal commands, with its pending events collected."""
    job = Job.submit(
        CAUSE, job_type="test.echo", payload={"n": 1}, max_attempts=max_attempts, **submit
    )
    if status is not Status.PENDING:
        job.schedule(CAUSE, NOW)
    if status in (Status.RUNNING, Status.COMPLETED, Status.FAILED):
        job.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=NOW)
        if cancel_requested:
            job.request_cancel(CAUSE)
    if status is Status.COMPLETED:
        job.complete(CAUSE, worker_id="w1", attempt=1, result={"ok": True})
    if status is Status.FAILED:
        job.fail_attempt(
            CAUSE,
            worker_id="w1",
            attempt=1,
            error_type="E",
            error_message="boom",
            retryable=False,
            now=NOW,
            backoff=NO_JITTER,
        )
    if status is Status.CANCELLED:
        job.request_cancel(CAUSE)
    assert job.status is status
    job.collect_events()
    return job


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)
