"""Domain errors: each names what was refused and why. Raising one records nothing."""

from __future__ import annotations

from typing import Any


class JobError(Exception):
    """Base of the errors a job command raises when it refuses to act."""


class IllegalTransitionError(JobError):
    """The move is not in the transition table for the job's current status."""

    def __init__(self, job_id: Any, status: str, move: str) -> None:
        super().__init__(f"job {job_id}: cannot {move} a job that is {status}")
        self.job_id, self.status, self.move = job_id, status, move


class StaleAttemptError(JobError):
    """The caller acts for an attempt or a worker that no longer owns the job (fenced out)."""

    def __init__(self, job_id: Any, detail: str) -> None:
        super().__init__(f"job {job_id}: {detail}")
        self.job_id = job_id


class NotDueError(JobError):
    """The job may not be scheduled before its due time."""


class IdempotencyConflictError(JobError):
    """The idempotency key was used before with a different request."""

    def __init__(self, key: str, job_id: Any) -> None:
        super().__init__(f"idempotency key {key!r} was used for job {job_id} with another request")
        self.key, self.job_id = key, job_id


class JobNotFoundError(JobError):
    """No job has that id."""

    def __init__(self, job_id: Any) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id
