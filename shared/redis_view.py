"""The status projection in Redis: one hash per job, counters, and indexes for listing.

Keys under the active generation's root (``<prefix>:`` or ``<prefix>:g<N>:``, see
``shared.generations``): ``job:<id>`` (hash), ``counts`` (hash: ``status:<S>``, ``type:<T>:<S>``,
``tenant:<tenant>:<S>``), ``index`` and ``index:status:<S>`` / ``index:type:<T>`` (sorted sets by
creation time; a tenant other than the default has its own under ``t:<tenant>:``),
``projection:position`` (the last notification id applied), ``forgotten`` (jobs whose hash the
projection deleted and uncounted, see ``redis_scripts.FORGET``). An update applies only when its
version is newer than the hash's (an atomic compare in Lua), so re-applying is harmless. A final
job's hash expires ``final_ttl_s`` after its final event (not after it was projected), so a replay
does not bring back jobs that had already left Redis.

This module reads (a job, several, a page of a tenant's jobs, counters, progress) and follows
the active generation; what the projection writes is ``shared.redis_writes``, its base class.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import cast
from uuid import UUID

from redis.commands.core import AsyncScript

from shared import generations
from shared.domain.job import DEFAULT_TENANT
from shared.generations import KeySpace
from shared.redis_scripts import LOCATE, READ
from shared.redis_writes import ProjectionWrites

INTERSECT_CHUNK = 1000
"""Ids of the smaller index checked against the other one per round trip (``page``)."""


class RedisView(ProjectionWrites):
    """Reads and writes the projection; every key lives under the configured prefix.

    A view made from settings follows the active generation (``shared.generations``); ``pinned``
    gives one bound to a single generation: guarded (its writes stop with GenerationMovedError
    once that generation is no longer active) or not (a replay building a new generation).
    """

    _followed: RedisView | None = None

    @cached_property
    def _read(self) -> AsyncScript:
        return self.redis.register_script(READ)

    @cached_property
    def _locate(self) -> AsyncScript:
        return self.redis.register_script(LOCATE)

    def pinned(self, space: KeySpace, *, guarded: bool = True) -> RedisView:
        """A view of one generation, sharing this view's connection."""
        return RedisView(self.settings, self.redis, space, guarded)

    async def current(self) -> RedisView:
        """This view if pinned, else one pinned (guarded) to the generation active now."""
        return self if self.space is not None else self._follow(await self.active_space())

    async def locate(self) -> tuple[RedisView, int]:
        """``current()`` and that generation's ``position()``, in one round trip."""
        if self.space is not None:
            return self, await self.position()
        generation, position = await self._locate(
            [generations.active_key(self.prefix)], [self.prefix]
        )
        return self._follow(KeySpace(self.prefix, generation)), int(position)

    def _follow(self, space: KeySpace) -> RedisView:
        """The guarded view of ``space``, kept while that generation stays the active one (a
        view registers its scripts: a step of the projection need not build one each time)."""
        if self._followed is None or self._followed.space != space:
            self._followed = self.pinned(space)
        return self._followed

    def job_key(self, job_id: UUID | str) -> str:
        """The key of a job's hash in the pinned generation (the base one when following)."""
        return (self.space or KeySpace(self.prefix)).job_key(job_id)

    async def get(self, job_id: UUID) -> dict[str, str] | None:
        """The job's hash in the active generation (resolved in the same call), or None."""
        if self.space is not None:
            data = cast(dict[str, str], await self.redis.hgetall(self.space.job_key(job_id)))
            return data or None
        flat = cast(
            list[str],
            await self._read([generations.active_key(self.prefix)], [self.prefix, str(job_id)]),
        )
        return dict(zip(flat[::2], flat[1::2], strict=True)) or None

    async def get_many(self, job_ids: Sequence[UUID | str]) -> list[dict[str, str] | None]:
        """The hashes of several jobs in one round trip (this view's generation)."""
        space = await self.space_now()
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(space.job_key(job_id))
        return [view or None for view in await pipe.execute()]

    async def page(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
        before: float | None = None,
        after: float | None = None,
    ) -> list[dict[str, str]]:
        """``tenant``'s jobs newest first, created before ``before`` and at or after ``after``
        (ms), filtered by status and type; only the tenant's own indexes are read.

        With both filters it walks the smaller of the two indexes and keeps the ids that are
        also in the other one (ZMSCORE, in Redis), so only matching jobs are read: a rare type
        among a million completed jobs costs a few round trips, not one read per completed job.
        The work is bounded by the smaller index, never by the larger."""
        space = await self.space_now()
        top = f"({before}" if before is not None else "+inf"
        bottom = str(after) if after is not None else "-inf"
        index, other = space.index_key(tenant=tenant), None
        by_status = space.index_key("status", status, tenant) if status else ""
        by_type = space.index_key("type", job_type, tenant) if job_type else ""
        if by_status and by_type:
            index, other = await self._smaller(by_status, by_type)
        else:
            index = by_status or by_type or index
        chunk = limit * 2 if other is None else max(limit * 2, INTERSECT_CHUNK)
        found: list[dict[str, str]] = []
        offset = 0
        while len(found) < limit:
            ids = cast(
                list[str],
                await self.redis.zrevrangebyscore(index, top, bottom, start=offset, num=chunk),
            )
            if not ids:
                break
            offset += len(ids)
            last = len(ids) < chunk  # the index has no more: no empty round trip to learn it
            if other is not None:
                scores = await self.redis.zmscore(other, ids)
                ids = [
                    job_id for job_id, score in zip(ids, scores, strict=True) if score is not None
                ]
                if not ids:
                    if last:
                        break
                    continue
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(space.job_key(job_id))
            for view in await pipe.execute():
                type_ok = not job_type or view.get("type") == job_type
                tenant_ok = view.get("tenant", DEFAULT_TENANT) == tenant
                if view and type_ok and tenant_ok and (not status or view.get("status") == status):
                    found.append(view)
            if last:
                break
        return found[:limit]

    async def _smaller(self, one: str, two: str) -> tuple[str, str]:
        """The two index keys, the one with fewer members first (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(one)
        pipe.zcard(two)
        size_one, size_two = await pipe.execute()
        return (one, two) if int(size_one) <= int(size_two) else (two, one)

    def progress_key(self, job_id: UUID | str) -> str:
        return f"{self.prefix}:progress:{job_id}"

    async def set_progress(self, job_id: UUID, fraction: float, message: str) -> None:
        """Progress is telemetry, kept beside the projection and never written to the log."""
        key = self.progress_key(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"fraction": f"{fraction:.4f}", "message": message})
        pipe.expire(key, 86_400)
        await pipe.execute()

    async def get_progress(self, job_id: UUID) -> dict[str, str] | None:
        data = cast(dict[str, str], await self.redis.hgetall(self.progress_key(job_id)))
        return data or None

    async def tenant_count(self, tenant: str, statuses: Sequence[str]) -> int:
        """How many of ``tenant``'s jobs stand in ``statuses`` (the counters, one round trip)."""
        fields = [f"tenant:{tenant}:{status}" for status in statuses]
        values = await self.redis.hmget((await self.space_now()).counts_key, fields)
        return sum(int(v) for v in values if v)

    async def counts(self) -> dict[str, int]:
        raw = cast(dict[str, str], await self.redis.hgetall((await self.space_now()).counts_key))
        return {k: int(v) for k, v in raw.items()}

    async def warn_if_noeviction(self) -> str | None:
        """Returns a warning when Redis would refuse writes instead of evicting when full."""
        config = await self.redis.config_get("maxmemory-policy")
        policy = config.get("maxmemory-policy", "")
        if policy == "noeviction":
            return (
                "Redis maxmemory-policy is noeviction: when Redis is full, projection writes "
                "fail instead of evicting; set allkeys-lru (status reads fall back to the log)"
            )
        return None
