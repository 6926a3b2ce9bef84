"""Example job types for the demo, the tests and the benchmarks: JOBTRAIL_JOB_MODULES=examples.jobs.

They show what a job type can do: a CPU-bound function, an async one with progress and
cancellation, input validation, retries (``test.flaky``), and a result the log cannot store
(``test.listing``). No production process loads them unless its JOBTRAIL_JOB_MODULES says so.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import statistics
import zlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.jobtypes import JobContext, NonRetryableError, job_type


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HashIn(_In):
    text: str = Field(max_length=1_000_000)
    rounds: int = Field(default=1, ge=1, le=100_000)
    algorithm: Literal["sha256", "blake2b"] = "sha256"


class HashOut(BaseModel):
    digest: str
    compressed_bytes: int


@job_type("cpu.hash", payload=HashIn, result=HashOut, queue="cpu", timeout_s=60)
def hash_text(payload: HashIn) -> HashOut:
    """Hashes the text ``rounds`` times and reports how well it compresses (CPU-bound)."""
    data = payload.text.encode()
    for _ in range(payload.rounds):
        data = hashlib.new(payload.algorithm, data).digest()
    return HashOut(digest=data.hex(), compressed_bytes=len(zlib.compress(payload.text.encode())))


class NoopIn(_In):
    pass


@job_type("noop", payload=NoopIn, result=None, timeout_s=60)
async def noop(payload: NoopIn) -> None:
    """Does nothing: what a job costs the system itself (benchmarks.compare measures it)."""


class SleepIn(_In):
    seconds: float = Field(ge=0, le=3600)
    steps: int = Field(default=4, ge=1, le=1000)


class SleepOut(BaseModel):
    slept_s: float


@job_type("io.sleep", payload=SleepIn, result=SleepOut, queue="io", timeout_s=3600)
async def sleep(payload: SleepIn, ctx: JobContext) -> SleepOut:
    """Sleeps in steps, reporting progress after each; stops at a cancel request."""
    step = payload.seconds / payload.steps
    for n in range(payload.steps):
        ctx.raise_if_cancelled()
        await asyncio.sleep(step)
        ctx.progress((n + 1) / payload.steps, f"step {n + 1} of {payload.steps}")
    return SleepOut(slept_s=payload.seconds)


class StatsIn(_In):
    csv: str = Field(max_length=1_000_000)
    column: str = Field(min_length=1, max_length=200)


class StatsOut(BaseModel):
    count: int
    mean: float
    minimum: float
    maximum: float
    stdev: float


@job_type("data.stats", payload=StatsIn, result=StatsOut, timeout_s=60)
def column_stats(payload: StatsIn) -> StatsOut:
    """Count, mean, min, max and standard deviation of one numeric column of CSV text."""
    rows = list(csv.DictReader(io.StringIO(payload.csv)))
    if not rows or payload.column not in rows[0]:
        raise NonRetryableError(f"CSV has no column {payload.column!r}")
    try:
        values = [float(row[payload.column]) for row in rows]
    except ValueError as exc:
        raise NonRetryableError(f"column {payload.column!r} is not numeric: {exc}") from exc
    return StatsOut(
        count=len(values),
        mean=statistics.fmean(values),
        minimum=min(values),
        maximum=max(values),
        stdev=statistics.pstdev(values),
    )


class FlakyIn(_In):
    fail_times: int = Field(default=1, ge=0, le=1000)
    message: str = Field(default="flaky failure", max_length=1000)
    retryable: bool = True


class FlakyOut(BaseModel):
    succeeded_on_attempt: int


@job_type("test.flaky", payload=FlakyIn, result=FlakyOut, max_attempts=3, timeout_s=30)
async def flaky(payload: FlakyIn, ctx: JobContext) -> FlakyOut:
    """Fails its first ``fail_times`` attempts, then succeeds; a poison job when it never stops."""
    if ctx.attempt <= payload.fail_times:
        if not payload.retryable:
            raise NonRetryableError(payload.message)
        raise RuntimeError(f"{payload.message} (attempt {ctx.attempt})")
    return FlakyOut(succeeded_on_attempt=ctx.attempt)


class ListingIn(_In):
    fail: bool = False


@job_type("test.listing", payload=ListingIn, max_attempts=3, timeout_s=30)
def listing(payload: ListingIn) -> dict[str, list[str]]:
    """Names files as ``os.listdir`` does on a non-UTF-8 file system: a lone surrogate
    (``\\udcff``) that the log cannot store, in the result or, with ``fail``, in the error."""
    name = os.fsdecode(b"report-\xff.csv")
    if payload.fail:
        raise RuntimeError(f"cannot read {name}")
    return {"names": [name]}
