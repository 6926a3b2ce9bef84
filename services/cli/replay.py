"""``jobtrail replay``: rebuild the Redis projection from the log, or refold chosen jobs.

Talks to PostgreSQL and Redis directly (the same settings as the services); needs no running
service. Progress goes to a rich progress bar; the result is one line with the rate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from uuid import UUID

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from services.projector import replay
from shared.eventstore import AsyncJobStore, JobStore
from shared.redis_view import RedisView
from shared.settings import RedisSettings, StoreSettings


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[AsyncJobStore, RedisView]]:
    async with AsyncJobStore(JobStore(StoreSettings())) as store:
        view = RedisView(RedisSettings())
        try:
            yield store, view
        finally:
            await view.aclose()


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} events/s"),
        TimeElapsedColumn(),
        console=console,
    )


def _tracker(progress: Progress, task: TaskID) -> Callable[[int, int], None]:
    start = progress.get_time()

    def update(position: int, head: int) -> None:
        elapsed = max(progress.get_time() - start, 1e-9)
        progress.update(task, completed=position, total=head, rate=position / elapsed)

    return update


async def rebuild(console: Console, batch: int) -> replay.Rebuilt:
    async with connected() as (store, view):
        with _bar(console) as progress:
            task = progress.add_task("replaying the log", total=None, rate=0.0)
            done = await replay.rebuild(store, view, batch=batch, progress=_tracker(progress, task))
    return done


async def refold_job(job_id: UUID) -> list[str]:
    async with connected() as (store, view):
        return [
            f"{job.id}: v{job.version} {job.status}"
            for job in await replay.refold(store, view, [job_id])
        ]


async def refold_range(console: Console, since: datetime | None, until: datetime | None) -> int:
    async with connected() as (store, view):
        with _bar(console) as progress:
            task = progress.add_task("finding jobs", total=None, rate=0.0)
            ids = await replay.jobs_between(store, since, until, progress=_tracker(progress, task))
        return len(await replay.refold(store, view, ids))
