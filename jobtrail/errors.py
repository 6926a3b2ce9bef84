"""The client's exceptions: every error answer of the API as a typed exception that carries its
problem document (RFC 9457), and what a job's outcome says instead of a result."""

from __future__ import annotations

from typing import Any

import httpx

from contracts.api import JobView


class JobtrailError(Exception):
    """Anything the client raises on purpose."""


class ApiError(JobtrailError):
    """The API answered an error: ``status`` and its problem document (``problem``: type, title,
    status, detail, and, for a 422, ``errors`` naming each field)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        super().__init__(f"{status} {problem.get('title', '')}: {self.detail}")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Each ``{field, message}`` the problem names (a 415 or 422), else none."""
        return list(self.problem.get("errors") or [])


class UnauthorizedError(ApiError):
    """401: no valid API key (missing, malformed, unknown or revoked)."""


class ForbiddenError(ApiError):
    """403: the key lacks the scope the request needs (``scope``)."""

    @property
    def scope(self) -> str | None:
        return self.problem.get("scope")


class NotFoundError(ApiError):
    """404: no such job, or another tenant's (the same answer)."""


class ConflictError(ApiError):
    """409: the job's state forbids it (cancelling a job that ended), or the idempotency key was
    used for another request."""


class InvalidRequestError(ApiError):
    """422: the request is invalid; ``fields`` names what is wrong (``payload.text``, ...)."""

    @property
    def fields(self) -> list[str]:
        return [str(error.get("field")) for error in self.errors]


class RetryLaterError(ApiError):
    """A refusal that says when to come back: ``retry_after`` seconds (Retry-After), or None."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None) -> None:
        super().__init__(status, problem)
        self.retry_after = retry_after


class RateLimitedError(RetryLaterError):
    """429: over the key's rate or the tenant's pending jobs."""


class UnavailableError(RetryLaterError):
    """503: the event store or Redis does not answer, or the submitter is at a bound."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidRequestError,
}


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: the client's own backoff decides


def error_for(response: httpx.Response) -> ApiError:
    """The typed exception of an error answer."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"status": response.status_code, "title": response.reason_phrase}
        problem["detail"] = response.text[:1000]
    status = response.status_code
    if status == 429:
        return RateLimitedError(status, problem, _retry_after(response))
    if status == 503:
        return UnavailableError(status, problem, _retry_after(response))
    return _BY_STATUS.get(status, ApiError)(status, problem)


class JobOutcomeError(JobtrailError):
    """The job ended without a result, or has not ended: ``job`` is how it stood."""

    def __init__(self, job: JobView, message: str) -> None:
        super().__init__(message)
        self.job = job


class JobFailedError(JobOutcomeError):
    """The job FAILED: ``error`` is what its last attempt raised (type, message)."""

    def __init__(self, job: JobView) -> None:
        self.error = job.error or {}
        super().__init__(job, f"job {job.id} failed: {self.error.get('message', self.error)}")


class JobCancelledError(JobOutcomeError):
    """The job was CANCELLED."""

    def __init__(self, job: JobView) -> None:
        super().__init__(job, f"job {job.id} was cancelled")


class WaitTimeoutError(JobOutcomeError, TimeoutError):
    """The job had not ended when the wait's timeout passed."""

    def __init__(self, job: JobView, timeout: float) -> None:
        super().__init__(job, f"job {job.id} is still {job.status} after {timeout} s")
