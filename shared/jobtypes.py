"""The job-type registry: a function with a payload model, a result model and defaults.

    @job_type("cpu.hash", payload=HashIn, result=HashOut, queue="cpu", timeout_s=30)
    def hash_text(payload: HashIn) -> HashOut: ...

Plain functions run in a thread pool, ``async def`` ones on the worker's event loop. A function
that takes a second parameter receives a JobContext (attempt, progress, cancellation).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from contracts.messages import JOB_TYPE_PATTERN
from contracts.names import check_queue_name

log = logging.getLogger(__name__)


class UnknownJobTypeError(LookupError):
    """No job type of that name is registered (check JOBTRAIL_JOB_MODULES)."""


class NonRetryableError(Exception):
    """Raised by a handler when retrying cannot help: the job fails at once."""


class JobCancelledError(Exception):
    """Raised inside a handler (by JobContext.raise_if_cancelled) when a cancel was requested."""


@dataclass
class JobContext:
    """What a running handler may know and do: its attempt, progress, cooperative cancellation."""

    job_id: UUID
    attempt: int
    worker_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    report: Callable[[float, str], None] = lambda fraction, message: None

    def progress(self, fraction: float, message: str = "") -> None:
        """Reports progress in [0, 1]; shown in the job's status, never written to the log."""
        self.report(max(0.0, min(1.0, fraction)), message[:200])

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelledError(f"job {self.job_id} was cancelled")


@dataclass(frozen=True)
class JobType:
    """A registered job type and its defaults."""

    name: str
    fn: Callable[..., Any]
    payload: type[BaseModel]
    result: type[BaseModel] | None
    queue: str = "default"
    priority: int = 5
    max_attempts: int = 3
    timeout_s: float = 300.0

    # Read on every run of the job: computed once (inspect.signature is costly).
    @cached_property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    @cached_property
    def wants_context(self) -> bool:
        return len(inspect.signature(self.fn).parameters) >= 2

    def parse_payload(self, payload: dict[str, Any]) -> BaseModel:
        """Validates a payload; raises pydantic's ValidationError naming the bad field."""
        return self.payload.model_validate(payload)

    def call(self, payload: dict[str, Any], context: JobContext) -> Any:
        """Calls the function: returns its value, or an awaitable for async functions."""
        try:
            model = self.parse_payload(payload)
        except ValidationError as exc:
            raise NonRetryableError(f"payload does not fit {self.payload.__name__}: {exc}") from exc
        return self.fn(model, context) if self.wants_context else self.fn(model)

    def dump_result(self, value: Any) -> Any:
        """The JSON form of a handler's return value, checked against the result model."""
        if self.result is not None:
            value = self.result.model_validate(value, from_attributes=True)
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return value


class Registry:
    """Job types by name."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}
        self._lock = threading.Lock()

    def add(self, job: JobType) -> None:
        if not re.match(JOB_TYPE_PATTERN, job.name):
            raise ValueError(f"job type name {job.name!r} must match {JOB_TYPE_PATTERN}")
        check_queue_name(job.queue)
        with self._lock:
            existing = self._types.get(job.name)
            if existing is not None and existing.fn is not job.fn:
                raise ValueError(f"job type {job.name!r} is registered twice")
            self._types[job.name] = job

    def get(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobTypeError(
                f"unknown job type {name!r}; known: {', '.join(sorted(self._types)) or 'none'}"
            ) from None

    def of(self, fn: Callable[..., Any]) -> JobType:
        """The job type whose function is ``fn`` (what ``@job_type`` decorated)."""
        for job in list(self._types.values()):
            if job.fn is fn:
                return job
        raise UnknownJobTypeError(
            f"{getattr(fn, '__qualname__', fn)!r} is not a registered job type "
            "(decorate it with @job_type and import its module)"
        )

    def names(self) -> list[str]:
        return sorted(self._types)

    def queues(self) -> list[str]:
        return sorted({t.queue for t in self._types.values()})

    def declared_queues(self, configured: Iterable[str]) -> list[str]:
        """The work queues to declare: those configured (JOBTRAIL_QUEUES) and every job type's."""
        return sorted(set(configured) | set(self.queues()))

    def load(self, modules: Iterable[str]) -> Registry:
        """Imports the modules that declare job types (JOBTRAIL_JOB_MODULES); warns when none
        is registered afterwards (the process runs, but knows no job type)."""
        for module in modules:
            importlib.import_module(module)
        if not self._types:
            log.warning(
                "no job types: JOBTRAIL_JOB_MODULES names no module that declares one, so every "
                "submission is refused and no worker runs a job; set it to your modules "
                "(examples.jobs has the examples)"
            )
        return self


registry = Registry()
"""The process-wide registry the ``job_type`` decorator fills."""

Handler = Callable[..., Any] | Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Handler)


def job_type(
    name: str,
    *,
    payload: type[BaseModel],
    result: type[BaseModel] | None = None,
    queue: str = "default",
    priority: int = 5,
    max_attempts: int = 3,
    timeout_s: float = 300.0,
) -> Callable[[F], F]:
    """Registers the decorated function as job type ``name``; returns it unchanged (its
    signature stays visible to type checkers: the client types a submission by it)."""

    def register(fn: F) -> F:
        registry.add(
            JobType(
                name=name,
                fn=fn,
                payload=payload,
                result=result,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                timeout_s=timeout_s,
            )
        )
        return fn

    return register
