"""Leader election by a PostgreSQL session advisory lock, and LISTEN/NOTIFY wake-ups.

The leader holds ``pg_try_advisory_lock(key)`` on a connection of its own and checks that
connection every ``check_s`` seconds; when the check fails, the leader's work is cancelled at
once. A standby retries the lock every ``check_s`` seconds, so it takes over within about that
long after the leader's session ends (a killed process's session ends at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import psycopg

from shared.eventstore.locks import LEADERS
from shared.postgres import connect_async

log = logging.getLogger(__name__)


class Leadership:
    """Runs ``work`` only while this process holds the named lock."""

    def __init__(self, url: str, name: str, *, check_s: float = 1.0) -> None:
        self.url, self.name, self.key, self.check_s = url, name, LEADERS[name], check_s

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Competes for the lock forever; runs ``work`` while it is held."""
        while True:
            try:
                await self._term(work)
            except (psycopg.Error, OSError) as exc:
                log.warning("%s leadership: database unavailable (%s); retrying", self.name, exc)
            await asyncio.sleep(self.check_s)

    async def _term(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async with await connect_async(self.url) as conn:
            while True:
                row = await (
                    await conn.execute("SELECT pg_try_advisory_lock(%s) AS held", [self.key])
                ).fetchone()
                if row and row["held"]:
                    break
                await asyncio.sleep(self.check_s)
            log.info("%s: this process is the leader", self.name)
            task = asyncio.create_task(work(), name=f"{self.name}-leader-work")
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=self.check_s)
                    if not task.done():
                        await asyncio.wait_for(conn.execute("SELECT 1"), timeout=self.check_s * 3)
                await task  # work ended by itself: surface its error
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


class Wakeup:
    """Wakes every subscriber when PostgreSQL NOTIFYs ``channel`` (each append to the log does)."""

    def __init__(self, url: str, channel: str) -> None:
        self.url, self.channel = url, channel
        self._events: list[asyncio.Event] = []

    def subscribe(self) -> Callable[[float], Awaitable[None]]:
        """A wait function: returns when notified, or after its timeout (the polling fallback)."""
        event = asyncio.Event()
        self._events.append(event)

        async def wait(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
            event.clear()

        return wait

    def _notify(self) -> None:
        for event in self._events:
            event.set()

    async def run(self) -> None:
        while True:
            try:
                async with await connect_async(self.url) as conn:
                    await conn.execute(f'LISTEN "{self.channel}"')
                    self._notify()  # anything committed while we were not listening
                    async for _ in conn.notifies():
                        self._notify()
            except (psycopg.Error, OSError) as exc:
                log.warning("LISTEN %s failed (%s); polling until it is back", self.channel, exc)
                await asyncio.sleep(1.0)
