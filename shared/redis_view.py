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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast
from uuid import UUID

from redis.asyncio import Redis

from shared import generations
from shared.domain.job import DEFAULT_TENANT, Job
from shared.domain.status import TERMINAL, Status
from shared.generations import KeySpace
from shared.redis_scripts import APPLY, APPLY_CHUNK, FORGET, LOCATE, PRUNE, READ, SET_POSITION
from shared.settings import RedisSettings
from shared.views import delta_view, full_view

INTERSECT_CHUNK = 1000
"""Ids of the smaller index checked against the other one per round trip (``page``)."""


class GenerationMovedError(Exception):
    """A guarded write found another generation active (a replay switched): resolve it again."""


class PositionMovedError(Exception):
    """The generation's position is not the one the updates follow (Redis lost its data, or
    another projection moved it): nothing was written; read the position again."""


class Applied(NamedTuple):
    """What ``apply_events`` did: the jobs to refold (each with the status it is counted under
    if its hash is gone, "" when unknown), and whether the position given was saved with it."""

    refold: dict[UUID, str]
    saved: bool


_FINAL = frozenset(str(status) for status in TERMINAL)


def _ends(fields: Mapping[str, str]) -> str:
    """APPLY's ``final``: whether the status these fields carry ends the job."""
    return "1" if fields.get("status") in _FINAL else "0"


def _ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


class RedisView:
    """Reads and writes the projection; every key lives under the configured prefix.

    A view made from settings follows the active generation (``shared.generations``); ``pinned``
    gives one bound to a single generation: guarded (its writes stop with GenerationMovedError
    once that generation is no longer active) or not (a replay building a new generation).
    """

    def __init__(
        self,
        settings: RedisSettings,
        client: Redis | None = None,
        space: KeySpace | None = None,
        guarded: bool = True,
    ) -> None:
        self.settings = settings
        self.prefix = settings.redis_prefix
        self.redis = client or Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        self.space, self.guarded = space, guarded
        self._apply = self.redis.register_script(APPLY)
        self._read = self.redis.register_script(READ)
        self._set_position = self.redis.register_script(SET_POSITION)
        self._prune = self.redis.register_script(PRUNE)
        self._forget = self.redis.register_script(FORGET)
        self._locate = self.redis.register_script(LOCATE)
        self._followed: RedisView | None = None

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

    async def active_space(self) -> KeySpace:
        return await generations.active(self.redis, self.prefix)

    async def _space(self) -> KeySpace:
        return self.space if self.space is not None else await self.active_space()

    def job_key(self, job_id: UUID | str) -> str:
        """The key of a job's hash in the pinned generation (the base one when following)."""
        return (self.space or KeySpace(self.prefix)).job_key(job_id)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def position(self) -> int:
        """The last notification id applied to this view's generation."""
        return int(await self.redis.get((await self._space()).position_key) or 0)

    async def _target(self) -> tuple[KeySpace, str]:
        space = await self._space()
        guard = space.generation if self.guarded or self.space is None else "*"
        return space, guard

    async def set_position(self, position: int, after: int | None = None) -> None:
        """Saves the position; ``after``: the position the caller's updates followed, and when
        it is no longer the stored one nothing is saved (PositionMovedError)."""
        space, guard = await self._target()
        keys = [space.active_key, space.position_key]
        answer = int(
            await self._set_position(keys, [guard, position, "" if after is None else after])
        )
        if answer == -2:
            raise GenerationMovedError(space.generation)
        if answer == -3:
            raise PositionMovedError(space.generation)

    async def _write(
        self, updates: list[list[Any]], position: int | None = None, after: int | None = None
    ) -> tuple[list[int], bool]:
        """Sends updates (see APPLY) in chunks on one pipeline; one result per update, and
        whether ``position`` was saved with them: only when they fit in one APPLY call (a
        single call is atomic, so the position never runs ahead of updates not yet applied).
        ``after``: the position they follow; PositionMovedError when it is not (see APPLY)."""
        if not updates:
            return [], False
        space, guard = await self._target()
        ttl = self.settings.final_ttl_s
        keys = [space.active_key, space.position_key]
        along = "" if position is None or len(updates) > APPLY_CHUNK else str(position)
        check = "" if after is None else str(after)
        if along:  # the common case of the live projection: one call, no pipeline
            encoded = json.dumps(updates, separators=(",", ":"))
            parts = [await self._apply(keys, [guard, ttl, space.root, encoded, along, check])]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for start in range(0, len(updates), APPLY_CHUNK):
                encoded = json.dumps(updates[start : start + APPLY_CHUNK], separators=(",", ":"))
                await self._apply(keys, [guard, ttl, space.root, encoded, "", check], pipe)
            parts = await pipe.execute()
        if any(int(part[0]) == -2 for part in parts):
            raise GenerationMovedError(space.generation)
        if any(int(part[0]) == -3 for part in parts):
            raise PositionMovedError(space.generation)
        saved = bool(along) and int(parts[0][0]) == 1
        return [int(r) for part in parts for r in part[1:]], saved

    async def prune(self, limit: int = 1000) -> int:
        """Removes up to ``limit`` expired final jobs from the list indexes; returns how many.
        Without it the indexes would keep an id per job forever, after its hash expired."""
        space, guard = await self._target()
        pruned = int(await self._prune([space.active_key], [guard, space.root, limit]))
        if pruned == -2:
            raise GenerationMovedError(space.generation)
        return pruned

    async def apply_events(
        self, events: Sequence[Job.Event], *, position: int | None = None, after: int | None = None
    ) -> Applied:
        """Applies events in one pipeline; returns the jobs that need a full refold, each with
        the status it is counted under if its hash is gone ("" when unknown). ``position`` (the
        log position after these events) is saved in the same call when nothing needs a refold
        and the events fit in one APPLY call; ``saved`` says whether it was. ``after`` (the
        position the events follow): nothing is written, PositionMovedError, when the
        generation's position is another one."""
        refold: dict[UUID, str] = {}
        updates: list[list[Any]] = []
        sent: list[UUID] = []
        for event in events:
            job_id = event.originator_id
            full = isinstance(event, Job.Submitted)
            if full:  # the first event holds everything the view needs
                # mutate, not project_aggregate: its Protocol check cost more than the rest
                first = cast(Job, event.mutate(None))
                fields: dict[str, str] | None = full_view(first)
            else:
                fields = delta_view(event)
            if fields is None:  # Requeued: only a FAILED job (whose hash may have expired)
                refold[job_id] = str(Status.FAILED)
                continue
            version, mode, at = str(event.originator_version), "1" if full else "0", event.timestamp
            updates.append([str(job_id), version, mode, fields, _ms(at), "", _ends(fields)])
            sent.append(job_id)
        results, saved = await self._write(updates, None if refold else position, after)
        for job_id, result in zip(sent, results, strict=True):
            if result == -1:
                refold.setdefault(job_id, "")
        return Applied(refold, saved)

    async def put_jobs(
        self, jobs: Sequence[Job], *, force: bool = False, was: Mapping[UUID, str] | None = None
    ) -> None:
        """Writes whole jobs (after a refold) over older versions; ``force`` also rewrites a hash
        of the same version (to repair drift), never a newer one. ``was``: the status a job
        whose hash is gone is still counted under (see apply_events)."""
        mode, hints = "2" if force else "1", was or {}
        await self._write(
            [
                [
                    str(j.id),
                    str(j.version),
                    mode,
                    view := full_view(j),
                    _ms(j.last_event_at),
                    hints.get(j.id, ""),
                    _ends(view),
                ]
                for j in jobs
            ]
        )

    async def forget(self, job_id: UUID) -> None:
        """Deletes a job's hash in this view's generation (its events cannot be applied), and
        takes it out of the counters and indexes (see FORGET): reads of the job then fall back
        to the log, the truth, and its next event refolds it as a new job."""
        space, guard = await self._target()
        if int(await self._forget([space.active_key], [guard, space.root, str(job_id)])) == -2:
            raise GenerationMovedError(space.generation)

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
        space = await self._space()
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
        space = await self._space()
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
        values = await self.redis.hmget((await self._space()).counts_key, fields)
        return sum(int(v) for v in values if v)

    async def counts(self) -> dict[str, int]:
        raw = cast(dict[str, str], await self.redis.hgetall((await self._space()).counts_key))
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
