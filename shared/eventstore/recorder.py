"""A PostgreSQL recorder that can append inside a transaction its caller opened and holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder


class JobRecorder(PostgresApplicationRecorder):
    """Inserts events on ``conn`` when given one: same table lock, NOTIFY and key check, no commit.

    The caller's transaction already holds the job's advisory lock, so load, decide and append
    commit together. Without ``conn`` it behaves exactly like eventsourcing's recorder.
    """

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        conn = kwargs.pop("conn", None)
        if conn is None:
            return cast(Sequence[int] | None, super().insert_events(stored_events, **kwargs))
        if not stored_events:
            return []
        with conn.cursor() as curs:
            self._insert_stored_events(curs, stored_events)
            ids: Sequence[int] | None = self._fetch_ids_after_insert_events(curs, stored_events)
            return ids
