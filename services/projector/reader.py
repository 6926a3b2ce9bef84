"""Reads the log for the projection on a connection of its own, in the event loop.

``AsyncJobStore.events_after`` runs in the store's thread pool on a pooled connection that the
pool pings before each use: two round trips to PostgreSQL and a hand-off to a thread and back
for every read. Once a busy projection step costs one Redis round trip, that read was most of
the step. The projection reads the log one query after the other, so a connection held for it
reads in one round trip, in the loop. A connection that fails is closed; the read is tried once
on a new one (what the pool's ping did), and a failure then is raised as before.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from shared.domain import Job
from shared.domain.cause import describe
from shared.eventstore import JobStore, Undecodable
from shared.postgres import connect_async


class LogReader:
    """The events after a position, as ``JobStore.events_after`` returns them (every kind)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(store.table)

    async def events_after(
        self, after: int, limit: int, skipped: list[Undecodable]
    ) -> list[tuple[int, Job.Event]]:
        """Up to ``limit`` (notification id, event) pairs after ``after``, in commit order; a
        row that does not decode is left out and listed in ``skipped``."""
        fresh = self._conn is None
        try:
            rows = await self._read(after, limit)
        except psycopg.Error:
            if fresh:
                raise
            rows = await self._read(after, limit)  # the server may have restarted meanwhile
        entries: list[tuple[int, Job.Event]] = []
        for row in rows:
            try:
                entries.append((row["notification_id"], self.store.decode(row)))
            except Exception as exc:
                skipped.append(
                    Undecodable(
                        row["notification_id"],
                        row["originator_id"],
                        row["originator_version"],
                        row["topic"],
                        describe(exc),
                    )
                )
        return entries

    async def _read(self, after: int, limit: int) -> list[dict[str, Any]]:
        if self._conn is None:
            self._conn = await connect_async(self.store.settings)
        try:
            cursor = await self._conn.execute(self._query, [after, limit], prepare=True)
            return await cursor.fetchall()
        except psycopg.Error:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
