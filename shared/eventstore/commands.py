"""What the store runs and returns: commands, their outcomes, and the errors it raises.

A command is a function of the job as it is (None when it does not exist yet) that returns it
with new pending events; ``fold`` is how a job is rebuilt from its events. Kept apart from
``shared.eventstore.store`` so that the asyncio facade, the services and the tests name them
without the store's machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from shared.domain.cause import describe
from shared.domain.errors import JobError, JobNotFoundError
from shared.domain.job import Job

Command = Callable[[Job | None], Job]
"""Given the job as it is (None when it does not exist yet), returns it with new pending events."""


def existing(change: Callable[[Job], None]) -> Command:
    """A command on a job that must already exist; JobNotFoundError otherwise."""

    def command(job: Job | None) -> Job:
        if job is None:
            raise JobNotFoundError(None)  # the store names the job (see _decide)
        change(job)
        return job

    return command


def fold(events: Iterable[Job.Event], job: Job | None = None) -> Job | None:
    """The job after ``events``, applied in order to ``job`` (None: from nothing).

    eventsourcing's ``project_aggregate`` with its per-event ``isinstance`` check against a
    runtime Protocol left out (that check alone cost more than applying the event): each
    ``mutate`` still checks that the event's version follows the job's, as it always did.
    """
    for event in events:
        job = event.mutate(job)
    return job


class ConcurrencyError(Exception):
    """The command kept meeting writers that bypassed the lock, or the database kept failing."""


class UnstorableEventError(ValueError):
    """An event holds a value the log cannot store (text that is not valid Unicode, say)."""

    def __init__(self, event: Job.Event, cause: Exception) -> None:
        detail = describe(cause, 500)
        super().__init__(
            f"job {event.originator_id}: {type(event).__name__} cannot be stored ({detail})"
        )
        self.job_id = event.originator_id


class UndecodableHistoryError(JobError):
    """A row of the job's history cannot be read (damaged state, a topic no code knows): the job
    cannot move, but the commands on other jobs of its batch go on."""

    def __init__(self, job_id: UUID, version: int, cause: Exception) -> None:
        detail = describe(cause, 500)
        super().__init__(
            f"job {job_id}: version {version} of its history cannot be read ({detail})"
        )
        self.job_id = job_id


@dataclass
class Outcome:
    """The result of one command in a batch: the job and its new events, or the error raised.

    ``notification_ids``: the committed rows' notification ids, one per event, in the same order
    (set only once the transaction that wrote them is known to have committed)."""

    job: Job | None = None
    events: list[Job.Event] = field(default_factory=list)
    error: BaseException | None = None
    notification_ids: list[int] = field(default_factory=list)

    def unwrap(self) -> Job:
        if self.error is not None:
            raise self.error
        assert self.job is not None
        return self.job


@dataclass(frozen=True)
class Undecodable:
    """A row of the log that does not decode into an event (unknown topic, damaged state)."""

    notification_id: int
    job_id: UUID | Any
    version: int
    topic: str
    error: str


@dataclass
class StoreStats:
    """Counters for metrics and for the tests that prove the lock works."""

    batches: int = 0
    commands: int = 0
    events: int = 0
    conflicts: int = 0
    transient_retries: int = 0
    unknown_commits: int = 0
    overloaded: int = 0
