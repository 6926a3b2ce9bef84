"""The job domain: statuses, the transition table, the Job aggregate. No infrastructure here."""

from shared.domain.backoff import Backoff
from shared.domain.cause import Cause
from shared.domain.errors import (
    IdempotencyConflictError,
    IllegalTransitionError,
    JobError,
    NotDueError,
    StaleAttemptError,
)
from shared.domain.job import DEFAULT_TENANT, TENANT_NAME, Job, job_id_for_key
from shared.domain.status import FINAL, TRANSITIONS, Move, Status, target

__all__ = [
    "DEFAULT_TENANT",
    "FINAL",
    "TENANT_NAME",
    "TRANSITIONS",
    "Backoff",
    "Cause",
    "IdempotencyConflictError",
    "IllegalTransitionError",
    "Job",
    "JobError",
    "Move",
    "NotDueError",
    "StaleAttemptError",
    "Status",
    "job_id_for_key",
    "target",
]
