"""Projects every event of the log into Redis; the position lives in Redis with the data.

When Redis loses its data (FLUSHALL, eviction, a restart without persistence) the position goes
with it and the projection rebuilds from the start of the log; a job whose hash was evicted alone
is refolded from its events. Versions are compared in Lua, so re-applying is harmless. It follows
the active generation (``shared.generations``), so a ``jobtrail rebuild`` can switch it over.
An event that cannot be applied (nor decoded) is quarantined (``shared.quarantine``) and its
job's hash deleted, so reads of that job fall back to the log; the projection goes on past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from psycopg import sql
from redis.exceptions import RedisError

from services.projector.reader import LogReader
from shared import generations, quarantine
from shared.domain import Job
from shared.eventstore import AsyncJobStore, JobStore, Undecodable
from shared.health import Progress
from shared.redis_view import RedisView
from shared.redis_writes import GenerationMovedError, PositionMovedError
from shared.retrying import TRANSIENT

log = logging.getLogger(__name__)

PRUNE_BATCH = 1000
AHEAD_CHECK_S = 10.0
"""How often an idle projection checks that its position is not past the log's head."""


def issued_head(store: JobStore) -> int:
    """The last notification id the log's sequence issued (0 before the first): at or past
    every position a projection of this log can have reached, also after an archive."""
    with store.connection() as conn:
        row = conn.execute(
            "SELECT pg_get_serial_sequence(%s, 'notification_id') AS s", [store.events_table]
        ).fetchone()
        if not row or not row["s"]:
            return int(store.max_notification_id())  # no sequence to ask: the rows' maximum
        value = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(row["s"]))
        ).fetchone()
    return int(value["last_value"]) if value and value["is_called"] else 0


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
        reader: LogReader | None = None,
    ) -> None:
        """``reader``: reads the log on a connection of its own (the live service's, see
        services.projector.reader); without it, through the store's pool."""
        self.store, self.view, self.wait, self.reader = store, view, wait, reader
        self.batch, self.poll_s, self.prune_s = batch, poll_s, prune_s
        self.applied = 0
        self._next_prune = 0.0
        self.progress = Progress()
        """Where the projection is and when it was last at the head (shared/health.py)."""
        self._ahead_check_at = 0.0
        self.restarts = 0
        """Generations started afresh because the position was past the log's head."""
        self._at: tuple[RedisView, int] | None = None
        """The generation followed and its position, as this projection last saved or read
        them: a busy step need not read them again (its write checks the position, see
        RedisView.apply_events); None: read them at the next step."""

    async def run(self) -> None:
        self.progress.start(self.progress.position)
        try:
            await self._run()
        finally:
            self.progress.active = False

    async def _run(self) -> None:
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

    async def _past_the_head(self, found: RedisView, position: int) -> bool:
        """An idle projection whose position is past the log's head follows another log: this
        Redis prefix holds the projection of a database restored from an older backup, or of
        another database. Nothing after the head would ever be applied, and the hashes are
        another history's. It starts a fresh generation (readers fall back to the log until it
        has caught up) and drops the old one. Checked every ``AHEAD_CHECK_S`` while idle (one
        ``max(notification_id)``); a head never moves back, so a position read before the head
        cannot be past it in a sane state. The head is the last notification id the log's
        sequence issued, not ``max(notification_id)``: an archive (``jobtrail archive``) deletes
        the newest rows when every history is final and old, the sequence never goes back."""
        now = time.monotonic()
        if position == 0 or now < self._ahead_check_at or found.space is None:
            return False
        self._ahead_check_at = now + AHEAD_CHECK_S
        head = await self.store.run_sync(issued_head, self.store.store)
        if position <= head:
            return False
        log.error(
            "projection position %d is past the log's head %d: this Redis prefix holds the "
            "projection of another log (a restored or different database); projecting the log "
            "into a fresh generation",
            position,
            head,
        )
        old = found.space
        new = await generations.new_generation(self.view.redis, self.view.prefix)
        switched = await generations.switch(self.view.redis, old, new, force=True)
        if switched is generations.Switch.SWITCHED:
            await generations.drop(self.view.redis, old)
        self.restarts += 1
        self._at = None
        return True

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
        """Applies the next batch; returns False when the projection is caught up (the batch
        was not full: what was committed before the read is applied, and what commits after it
        NOTIFYs the wait that follows).

        Every write is guarded by the generation: after a replay switches readers, the step
        that raced it writes nothing more to the old generation, and the next one continues
        from the new generation's own position. A busy step costs one Redis round trip: the
        events, checked against the position they follow and saved with the new one
        (``apply_events``); the generation and its position are read again (``locate``) when
        the log had nothing new (so a Redis that lost everything while idle is rebuilt as
        before), and after any failure.
        """
        if self._at is None:
            self._at = await self.view.locate()
        view, position = self._at
        self.progress.at(position)
        skipped: list[Undecodable] = []
        read_at = time.monotonic()
        if self.reader is not None:
            entries = await self.reader.events_after(position, self.batch, skipped)
        else:
            entries = await self.store.events_after(position, self.batch, (), skipped)
        if not entries and not skipped:
            self._at = None
            found, moved = await self.view.locate()
            if moved == position and found.space == view.space:
                if await self._past_the_head(found, moved):
                    return True  # a fresh generation: project the log from its start
                self._at = found, moved
                self.progress.at(moved)
                self.progress.idle(read_at)
                return False
            return True  # the position moved meanwhile (a flush, a replay): go on from there
        self._at = None  # until this step has saved its position
        try:
            for u in skipped:
                await self._quarantine(view, quarantine.Poison.undecodable("projection", u))
            last = max([n for n, _ in entries] + [u.notification_id for u in skipped])
            try:
                saved = await self._apply(view, entries, last, position)
            except _NOT_POISON:
                raise
            except Exception:  # some event of the batch is poison: find it, one at a time
                saved = False
                for entry in entries:
                    await self._apply_or_quarantine(view, entry)
            if not saved:  # unless Redis lost or moved the position meanwhile (a flush)
                await view.set_position(last, after=position)
        except GenerationMovedError:
            log.info("projection: readers moved to another generation; continuing there")
            return True
        except PositionMovedError:
            log.warning(
                "projection: the position in Redis is not %d as saved (Redis lost data, or "
                "another projection ran); going on from the position Redis holds",
                position,
            )
            return True
        self._at = view, last
        self.applied += len(entries)
        self.progress.advanced(last)
        if len(entries) + len(skipped) < self.batch:  # it read up to the head
            self.progress.idle(read_at)
            return False
        return True

    async def _apply(
        self,
        view: RedisView,
        entries: list[tuple[int, Job.Event]],
        position: int | None = None,
        after: int | None = None,
    ) -> bool:
        """Applies the entries (and refolds what needs it); True when ``position`` was saved
        with them (see RedisView.apply_events), else the caller saves it afterwards."""
        events = [e for _, e in entries]
        refold, saved = await view.apply_events(events, position=position, after=after)
        if refold:
            await view.put_jobs(await self.store.get_many(sorted(refold)), was=refold)
        return saved

    async def _apply_or_quarantine(self, view: RedisView, entry: tuple[int, Job.Event]) -> None:
        notification_id, event = entry
        try:
            await self._apply(view, [entry])
        except _NOT_POISON:
            raise
        except Exception as exc:
            poison = quarantine.Poison.of("projection", notification_id, event, exc)
            await self._quarantine(view, poison)

    async def _quarantine(self, view: RedisView, poison: quarantine.Poison) -> None:
        """Records the poison and deletes its job's hash: reads of the job go to the log."""
        if poison.job_id is not None:
            await view.forget(poison.job_id)
        await quarantine.record(self.store, poison, "hash_deleted")


_NOT_POISON: tuple[type[Exception], ...] = (
    RedisError,
    GenerationMovedError,
    PositionMovedError,
    *TRANSIENT,
)
"""Failures that pass: retried as they are, never quarantined."""
