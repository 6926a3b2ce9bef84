"""What a worker holds while it runs jobs: the attempts in flight and their outcomes.

Why a module: the worker's use cases (services/worker/handlers.py), its subscribers and its
loops all read and change this state; it has no I/O of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from shared.domain import Backoff
from shared.jobtypes import JobContext, Registry

log = logging.getLogger(__name__)


Attempt = tuple[UUID, int]
"""(job id, attempt): what a worker runs and holds a lease for. One worker may run two attempts
of one job at once: the first lost its lease while still running, and the second was then
scheduled onto the same worker."""


@dataclass
class Running:
    """An attempt of a job this worker runs now."""

    job_id: UUID
    attempt: int
    context: JobContext
    task: asyncio.Task[Any] | None = None
    lease_lost: bool = False
    cancel_asked: bool = False  # a cancel of this attempt was requested (jobtrail_leases)
    handed_back: bool = False  # the worker is stopping and gives this attempt back (a retry)

    @property
    def key(self) -> Attempt:
        return (self.job_id, self.attempt)

    def stop(self) -> None:
        """Asks the handler to stop: cooperatively (its context), and by cancelling its task."""
        self.context.cancelled.set()
        if self.task is not None:
            self.task.cancel()


UNSTORABLE = "UnstorableResult"
"""The error type of a job whose result or error the log cannot store: it ends FAILED."""


@dataclass
class Outcome:
    kind: str  # completed | failed | cancelled
    result: Any = None
    error_type: str = ""
    error_message: str = ""
    retryable: bool = True
    retry_at_once: bool = False  # not the job's fault (the worker stops): no backoff


@dataclass
class WorkerState:
    """What the worker holds: its id, its running jobs, its handlers' thread budget."""

    worker_id: str
    lease_s: float
    backoff: Backoff
    registry: Registry
    running: dict[Attempt, Running] = field(default_factory=dict)
    executions: int = 0
    stopping: bool = False  # set on SIGTERM: deliveries not yet started go back to the queue
    handing_back: bool = False  # the shutdown grace is over: what starts now is handed back
    took_at: float = field(default_factory=time.monotonic)
    """time.monotonic() when a delivery last took a slot (services/worker/readiness.py)."""

    def add(self, running: Running) -> None:
        """Registers an attempt; an older attempt of the same job still running here lost its
        lease (the job was scheduled again), so it is stopped: its outcome would be refused."""
        for key, other in list(self.running.items()):
            if key[0] == running.job_id and key[1] < running.attempt and not other.lease_lost:
                log.warning("%s attempt %d is superseded: stopping it", key[0], key[1])
                other.lease_lost = True
                other.stop()
        running.handed_back = self.handing_back
        self.running[running.key] = running

    def remove(self, running: Running) -> None:
        """Forgets this attempt, and only this one."""
        if self.running.get(running.key) is running:
            del self.running[running.key]
