"""Drift between the Redis projection and the log: each job's hash against the fold of its events.

``find_drift`` compares, in batches (one log query and one Redis pipeline per ``batch`` jobs),
every job of the active generation and every job of the log, or just the jobs given. A final job
whose hash left Redis after ``final_ttl_s`` is not drift. Events not yet projected would look like
drift, so differences are checked a second time once the projection has reached the end of the
log as it was when the check began (bounded by ``settle_s``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

from shared.domain import Job
from shared.domain.status import TERMINAL
from shared.eventstore import AsyncJobStore
from shared.redis_view import RedisView
from shared.views import full_view

Kind = Literal["differs", "missing", "unknown"]


@dataclass(frozen=True)
class Drift:
    """A job whose Redis hash is not the fold of its events.

    ``kind``: ``differs`` (both exist), ``missing`` (in the log, not in Redis), ``unknown`` (in
    Redis, not in the log). ``fields``: name -> (value in Redis, value from the log).
    """

    job_id: UUID
    kind: Kind
    fields: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def expected_view(job: Job) -> dict[str, str]:
    """The hash the projection should hold for a job."""
    return full_view(job) | {"version": str(job.version)}


def differences(
    job: Job, cached: dict[str, str] | None
) -> dict[str, tuple[str | None, str | None]]:
    """Fields whose value in Redis differs from the job's fold: name -> (Redis, log)."""
    expected, have = expected_view(job), cached or {}
    return {
        name: (have.get(name), expected.get(name))
        for name in sorted(expected.keys() | have.keys())
        if have.get(name) != expected.get(name)
    }


def expired(job: Job, ttl_s: int, now: datetime) -> bool:
    """Whether a final job's hash has legitimately left Redis (its TTL ran out)."""
    last = job.last_event_at
    return ttl_s > 0 and job.status in TERMINAL and last + timedelta(seconds=ttl_s) <= now


async def find_drift(
    store: AsyncJobStore,
    view: RedisView,
    job_ids: Sequence[UUID] | None = None,
    *,
    batch: int = 1000,
    settle_s: float = 10.0,
) -> list[Drift]:
    """Every job whose Redis hash differs from its events (all jobs, or ``job_ids``)."""
    head = await store.run_sync(store.store.max_notification_id)
    ids = list(job_ids) if job_ids is not None else await all_job_ids(store, view, batch)
    found = await _compare(store, view, ids, batch)
    if found and settle_s > 0:
        for _ in range(max(1, int(settle_s * 10))):  # wait for the projection, bounded
            if await view.position() >= head:
                break
            await asyncio.sleep(0.1)
        found = await _compare(store, view, [d.job_id for d in found], batch)
    return found


async def all_job_ids(store: AsyncJobStore, view: RedisView, batch: int = 10_000) -> list[UUID]:
    """Every job in the log (by its Submitted event) and every job hash in the active generation."""
    ids: dict[UUID, None] = {}
    position = 0
    while entries := await store.events_after(position, batch, [Job.Submitted]):
        ids.update((event.originator_id, None) for _, event in entries)
        position = entries[-1][0]
    space = await view.active_space()
    start = len(space.job_key(""))
    async for key in view.redis.scan_iter(match=space.job_key("*"), count=batch):
        try:
            ids[UUID(key[start:])] = None
        except ValueError:
            continue  # not a job hash of ours
    return list(ids)


async def _compare(
    store: AsyncJobStore, view: RedisView, ids: Sequence[UUID], batch: int
) -> list[Drift]:
    ttl_s = view.settings.final_ttl_s
    found: list[Drift] = []
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        jobs = {job.id: job for job in await store.get_many(chunk)}
        cached = await (await view.current()).get_many(chunk)
        now = datetime.now(UTC)
        for job_id, have in zip(chunk, cached, strict=True):
            job = jobs.get(job_id)
            if job is None:
                if have is not None:
                    found.append(Drift(job_id, "unknown", _in_redis_only(have)))
            elif have is None:
                if not expired(job, ttl_s, now):
                    found.append(Drift(job_id, "missing", differences(job, None)))
            elif diff := differences(job, have):
                found.append(Drift(job_id, "differs", diff))
    return found


def _in_redis_only(have: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {name: (value, None) for name, value in sorted(have.items())}
