"""Projects every event of the log into Redis; the position lives in Redis with the data.

When Redis loses its data (FLUSHALL, eviction, a restart without persistence) the position goes
with it and the projection rebuilds from the start of the log; a job whose hash was evicted alone
is refolded from its events. Versions are compared in Lua, so re-applying is harmless. It follows
the active generation (``shared.generations``), so a ``jobtrail replay`` can switch it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from shared.eventstore import AsyncJobStore
from shared.redis_view import GenerationMovedError, RedisView

log = logging.getLogger(__name__)

PRUNE_BATCH = 1000


class Projection:
    """Keeps the Redis view in step with the log."""

    def __init__(
        self,
        store: AsyncJobStore,
        view: RedisView,
        wait: Callable[[float], Awaitable[None]],
        *,
        batch: int = 1000,
        poll_s: float = 1.0,
        prune_s: float = 60.0,
    ) -> None:
        self.store, self.view, self.wait = store, view, wait
        self.batch, self.poll_s, self.prune_s = batch, poll_s, prune_s
        self.applied = 0
        self._next_prune = 0.0

    async def run(self) -> None:
        try:
            warning = await self.view.warn_if_noeviction()
            if warning:
                log.warning(warning)
        except RedisError as exc:
            log.warning("cannot read Redis maxmemory-policy: %s", exc)
        while True:
            try:
                if not await self.step():
                    await self.wait(self.poll_s)
                await self.prune_if_due()
            except RedisError as exc:
                log.warning("projection: Redis unavailable (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def prune_if_due(self) -> None:
        """Every ``prune_s``: expired final jobs leave the list indexes (see RedisView.prune)."""
        now = asyncio.get_running_loop().time()
        if not self.prune_s or now < self._next_prune:
            return
        self._next_prune = now + self.prune_s
        view = await self.view.current()
        with contextlib.suppress(GenerationMovedError):  # the next round prunes the new one
            while await view.prune(PRUNE_BATCH) == PRUNE_BATCH:
                pass

    async def step(self) -> bool:
        """Applies the next batch; returns False when the projection is caught up.

        The generation is resolved at every step and every write is guarded by it: after a
        replay switches readers, the step that raced it writes nothing more to the old
        generation, and the next one continues from the new generation's own position.
        """
        view = await self.view.current()
        position = await view.position()
        entries = await self.store.events_after(position, self.batch)
        if not entries:
            return False
        try:
            refold = await view.apply_events([event for _, event in entries])
            if refold:
                await view.put_jobs(await self.store.get_many(sorted(refold)), was=refold)
            await view.set_position(entries[-1][0])
        except GenerationMovedError:
            log.info("projection: readers moved to another generation; continuing there")
            return True
        self.applied += len(entries)
        return True
