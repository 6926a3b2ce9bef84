"""Replays the log into Redis: a whole new generation, or a refold of chosen jobs.

``rebuild`` projects every event from notification 0 into a fresh generation while readers and
the live projection keep using the active one; when it has read to the end of the log it switches
readers over atomically (only if the old generation is still active and has not applied more of
the log), then unlinks the old generation. The live projection resolves the generation at every
step, so after the switch it continues from the new generation's own position.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from services.projector.projection import Projection
from shared import generations
from shared.domain import Job
from shared.eventstore import AsyncJobStore
from shared.generations import KeySpace, Switch
from shared.redis_view import RedisView
from shared.redis_writes import GenerationMovedError

Progress = Callable[[int, int], None]
"""Called after each batch with (position reached, last notification id known)."""


class ReplayRaceError(Exception):
    """Another replay switched readers first; this replay's generation was dropped."""


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild did."""

    events: int
    seconds: float
    old: KeySpace
    new: KeySpace
    dropped: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def rebuild(
    store: AsyncJobStore, view: RedisView, *, batch: int = 5000, progress: Progress | None = None
) -> Rebuilt:
    """Builds a new generation from the whole log, switches readers to it, drops the old one."""
    old = await view.active_space()
    new = await generations.new_generation(view.redis, view.prefix)
    target = view.pinned(new, guarded=False)
    projection = Projection(store, target, asyncio.sleep, batch=batch)
    head = await store.run_sync(store.store.max_notification_id)
    started = time.perf_counter()
    try:
        while True:
            before = projection.applied
            await projection.step()
            position = await target.position()
            head = max(head, position)
            if progress is not None:
                progress(position, head)
            found = projection.applied - before
            if found < batch:  # read to the end of the log as it was a moment ago
                outcome = await generations.switch(view.redis, old, new, force=found == 0)
                if outcome is Switch.SWITCHED:
                    break
                if outcome is Switch.MOVED:
                    raise ReplayRaceError(
                        f"another replay switched readers away from generation {old.root!r}"
                    )
    except BaseException:
        await generations.drop(view.redis, new)
        raise
    seconds = time.perf_counter() - started
    dropped = await generations.drop(view.redis, old)
    return Rebuilt(projection.applied, seconds, old, new, dropped)


async def refold(store: AsyncJobStore, view: RedisView, job_ids: Sequence[UUID]) -> list[Job]:
    """Rewrites the jobs' hashes in the active generation from their events (repairs drift);
    returns the jobs found in the log. A hash newer than the log read is left alone."""
    found: list[Job] = []
    for start in range(0, len(job_ids), 1000):
        jobs = await store.get_many(job_ids[start : start + 1000])
        while True:
            try:
                await (await view.current()).put_jobs(jobs, force=True)
                break
            except GenerationMovedError:  # a replay switched meanwhile: write to the new one
                continue
        found += jobs
    return found


async def jobs_between(
    store: AsyncJobStore,
    since: datetime | None,
    until: datetime | None,
    *,
    batch: int = 10_000,
    progress: Progress | None = None,
) -> list[UUID]:
    """The jobs with an event at ``since`` <= time < ``until``, found by reading the whole log
    (event times are close to, not exactly in, commit order)."""
    head = await store.run_sync(store.store.max_notification_id)
    jobs: dict[UUID, None] = {}
    position = 0
    while entries := await store.events_after(position, batch):
        for _, event in entries:
            at = event.timestamp
            if (since is None or at >= since) and (until is None or at < until):
                jobs[event.originator_id] = None
        position = entries[-1][0]
        head = max(head, position)
        if progress is not None:
            progress(position, head)
    return list(jobs)
