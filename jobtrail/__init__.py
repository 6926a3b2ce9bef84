"""jobtrail's Python client (``jobtrail.client``): submit jobs, wait for them and read their
results and histories over the HTTP API, with typed errors and safe retries."""

from contracts.messages import SubmitJob
from jobtrail.aio import AsyncClient
from jobtrail.calls import RetryPolicy
from jobtrail.client import Client
from jobtrail.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    JobCancelledError,
    JobFailedError,
    JobtrailError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    UnavailableError,
    WaitTimeoutError,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "InvalidRequestError",
    "JobCancelledError",
    "JobFailedError",
    "JobtrailError",
    "NotFoundError",
    "RateLimitedError",
    "RetryPolicy",
    "SubmitJob",
    "UnauthorizedError",
    "UnavailableError",
    "WaitTimeoutError",
]
