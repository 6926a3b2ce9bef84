"""Job types for fault scenarios; each run is counted outside the log, in an append-only file.

JOBTRAIL_CHAOS_DIR names the folder; every worker process appends ``<job id> <attempt>`` lines to
its own file with O_APPEND writes, which survive the process being killed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shared.jobtypes import JobContext, job_type

_fd: int | None = None


def _record(ctx: JobContext) -> None:
    global _fd
    folder = os.environ.get("JOBTRAIL_CHAOS_DIR")
    if not folder:
        return
    if _fd is None:
        _fd = os.open(
            Path(folder) / f"executions-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )
    os.write(_fd, f"{ctx.job_id} {ctx.attempt}\n".encode())


class WorkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ms: int = Field(default=50, ge=0, le=60_000)
    fail_times: int = Field(default=0, ge=0)


@job_type("chaos.work", payload=WorkIn, max_attempts=5, timeout_s=60)
async def work(payload: WorkIn, ctx: JobContext) -> dict[str, int]:
    """Sleeps ``ms``; fails its first ``fail_times`` attempts (a poison job when it never stops)."""
    _record(ctx)
    await asyncio.sleep(payload.ms / 1000)
    if ctx.attempt <= payload.fail_times:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


def executions(folder: Path) -> dict[str, list[int]]:
    """Every recorded run: job id -> attempts it ran."""
    runs: dict[str, list[int]] = {}
    for path in folder.glob("executions-*.log"):
        for line in path.read_text().splitlines():
            job_id, attempt = line.split()
            runs.setdefault(job_id, []).append(int(attempt))
    return runs
