"""``jobtrail rebuild``: rebuild the Redis projection from the log, or refold chosen jobs.

Talks to PostgreSQL and Redis directly (the same settings as the services); needs no running
service. Progress goes to a rich progress bar; the result is one line with the rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from services.cli.console import console, fail
from services.cli.database import connected
from services.cli.options import optional_time, parse_job_id
from services.projector import replay
from shared.servers import check_infrastructure


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


def replay_log(
    job: Annotated[str | None, typer.Option(help="refold only this job (its id)")] = None,
    since: Annotated[
        str | None, typer.Option(help="refold the jobs with an event at or after this ISO time")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="refold the jobs with an event before this ISO time")
    ] = None,
    batch: Annotated[int, typer.Option(min=100, max=100_000, help="events read per step")] = 5000,
) -> None:
    """Rebuilds the Redis projection from the log into a new key space and switches readers to it;
    or refolds one job (--job) or the jobs with events in a time range (--since/--until)."""
    if job is not None and (since or until):
        raise fail("use either --job or --since/--until, not both", 2)
    job_id = None if job is None else parse_job_id(job, "--job")
    start, end = optional_time(since, "--since"), optional_time(until, "--until")
    if start and end and start >= end:
        raise fail("--since must be before --until", 2)
    problems = check_infrastructure(("PostgreSQL", "Redis"))
    if problems:
        raise fail("\n".join(problems), 2)
    try:
        if job_id is not None:
            refolded = asyncio.run(refold_job(job_id))
            if not refolded:
                raise fail(f"job {job_id} has no events in the log")
            console.print(f"refolded {refolded[0]}")
        elif start or end:
            count = asyncio.run(refold_range(console, start, end))
            console.print(f"refolded {count} job(s) with events in the range")
        else:
            done = asyncio.run(rebuild(console, batch))
            console.print(
                f"replayed {done.events} events in {done.seconds:.1f} s "
                f"({done.rate:.0f} events/s); readers moved from {done.old.root!r} to "
                f"{done.new.root!r}; unlinked {done.dropped} old keys"
            )
    except typer.Exit:
        raise
    except Exception as exc:  # a database that does not exist, a replay that lost a race ...
        raise fail(f"replay failed: {type(exc).__name__}: {exc}") from None


def register(app: typer.Typer) -> None:
    app.command(name="rebuild")(replay_log)
    app.command(name="replay", hidden=True, help="Old name of `jobtrail rebuild`.")(replay_log)
