"""What the projection writes to Redis, and the connection it writes on.

``ProjectionWrites`` is the base of ``shared.redis_view.RedisView``: the connection, the generation
a view writes to (pinned, or the active one) and every write of the projection: events applied
and whole jobs put through the APPLY script (the fields come from ``shared.views``, APPLY only
stores them), the position, pruning and forgetting; with the errors a guarded write raises. The
reads (a job, a page, counters, progress) are RedisView's. Key layout: ``shared.redis_view``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast
from uuid import UUID

from redis.asyncio import Redis

from shared import generations
from shared.domain.job import Job
from shared.domain.status import TERMINAL, Status
from shared.generations import KeySpace
from shared.redis_scripts import APPLY, APPLY_CHUNK, FORGET, PRUNE, SET_POSITION
from shared.settings import RedisSettings
from shared.views import delta_view, full_view


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


class ProjectionWrites:
    """A connection to the projection, bound to one generation (``space``) or following the
    active one, and what the projector writes there. ``guarded``: writes to a pinned generation
    stop with GenerationMovedError once it is no longer the active one (a rebuild building a new
    generation writes unguarded)."""

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
        self._set_position = self.redis.register_script(SET_POSITION)
        self._prune = self.redis.register_script(PRUNE)
        self._forget = self.redis.register_script(FORGET)

    async def active_space(self) -> KeySpace:
        return await generations.active(self.redis, self.prefix)

    async def space_now(self) -> KeySpace:
        """This view's generation: the pinned one, else the one active now."""
        return self.space if self.space is not None else await self.active_space()

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def position(self) -> int:
        """The last notification id applied to this view's generation."""
        return int(await self.redis.get((await self.space_now()).position_key) or 0)

    async def _target(self) -> tuple[KeySpace, str]:
        space = await self.space_now()
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
