"""Job statuses and the one table of legal moves between them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """The statuses a user sees."""

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Move(StrEnum):
    """Everything that can happen to a job; each move is recorded as exactly one event."""

    SCHEDULE = "schedule"  # dispatched to a worker queue
    START = "start"  # claimed by a worker
    COMPLETE = "complete"
    RETRY = "retry"  # an attempt failed, attempts remain
    FAIL = "fail"  # an attempt failed for the last time, or with a non-retryable error
    EXPIRE_RETRY = "expire_retry"  # lease expired, attempts remain
    EXPIRE_FAIL = "expire_fail"  # lease expired on the last attempt
    REQUEST_CANCEL = "request_cancel"  # cancel asked of a running job; the worker must agree
    CANCEL = "cancel"
    REQUEUE = "requeue"  # an operator gives a failed job more attempts
    QUARANTINE = "quarantine"  # an event of the job can never become a message: stop waiting


P, S, R = Status.PENDING, Status.SCHEDULED, Status.RUNNING

# (from, move) -> to. A pair that is absent is illegal. Submit creates a job in PENDING.
TRANSITIONS: dict[tuple[Status, Move], Status] = {
    (P, Move.SCHEDULE): S,
    (P, Move.CANCEL): Status.CANCELLED,
    (P, Move.QUARANTINE): Status.FAILED,
    (S, Move.START): R,
    (S, Move.CANCEL): Status.CANCELLED,
    (S, Move.QUARANTINE): Status.FAILED,
    (R, Move.COMPLETE): Status.COMPLETED,
    (R, Move.RETRY): P,
    (R, Move.FAIL): Status.FAILED,
    (R, Move.EXPIRE_RETRY): P,
    (R, Move.EXPIRE_FAIL): Status.FAILED,
    (R, Move.REQUEST_CANCEL): R,
    (R, Move.CANCEL): Status.CANCELLED,
    (Status.FAILED, Move.REQUEUE): P,
}

INITIAL = Status.PENDING
FINAL = frozenset({Status.COMPLETED, Status.CANCELLED})
"""Statuses nothing leaves. FAILED is terminal too, but an operator may requeue it."""
TERMINAL = FINAL | {Status.FAILED}


MOVE_TARGET: dict[Move, Status] = {move: to for (_, move), to in TRANSITIONS.items()}
"""The status each move leads to (the same whatever status it leaves)."""
assert len({(m, t) for (_, m), t in TRANSITIONS.items()}) == len(MOVE_TARGET), "move target unique"


def target(status: Status, move: Move) -> Status | None:
    """Returns the status that ``move`` leads to from ``status``, or None when it is illegal."""
    return TRANSITIONS.get((status, move))
