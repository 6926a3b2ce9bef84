"""A PostgreSQL recorder that can append inside a transaction its caller opened and holds.

Appends are serialised by a transaction-scoped advisory lock (``locks.LOG_LOCK``) instead of
eventsourcing's ``LOCK TABLE ... IN EXCLUSIVE MODE``: same effect (one appending transaction at a
time, so notification ids commit in the order they are issued and a follower never passes over a
gap that fills later), but PostgreSQL grants ``EXCLUSIVE`` table locks only to roles with UPDATE,
DELETE or TRUNCATE on the table, and the services' role has none of those (schema.grant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import sql

from shared.eventstore.locks import LOG_LOCK


class JobRecorder(PostgresApplicationRecorder):
    """Inserts events on ``conn`` when given one: same log lock, NOTIFY and key check, no commit.

    The caller's transaction already holds the job's advisory lock, so load, decide and append
    commit together; it also passes each row's ``chain_hash`` (shared.eventstore.chain). Without
    ``conn`` it behaves exactly like eventsourcing's recorder (rows without a chain hash, which
    ``jobtrail verify`` reports).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # eventsourcing's own insert path (no ``conn``) runs these statements too
        self.lock_table_statements = [
            sql.SQL("SET LOCAL lock_timeout = '{}s'").format(self.datastore.lock_timeout),
            sql.SQL("SELECT pg_advisory_xact_lock({}, {})").format(*map(sql.Literal, LOG_LOCK)),
        ]
        self.insert_chained_statement = sql.SQL(
            "INSERT INTO {schema}.{table} "
            "(originator_id, originator_version, topic, state, chain_hash) "
            "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[], %s::bytea[]) "
            "RETURNING originator_id, originator_version, notification_id"
        ).format(
            schema=sql.Identifier(self.datastore.schema),
            table=sql.Identifier(self.events_table_name),
        )
        # eventsourcing sends these three one at a time (three round trips a transaction); they
        # take no parameters, so one simple query carries them all, in the same order
        self.prelude_statement = sql.SQL("; ").join(
            [
                *self.lock_table_statements,
                sql.SQL("NOTIFY {}").format(sql.Identifier(self.channel_name)),
            ]
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """With ``conn``: the rows' notification ids, in the order of ``stored_events`` (matched
        by job and version, not by the order RETURNING happens to give them)."""
        conn = kwargs.pop("conn", None)
        if conn is None:
            return cast(Sequence[int] | None, super().insert_events(stored_events, **kwargs))
        if not stored_events:
            return []
        hashes: Sequence[bytes] = kwargs["chain_hashes"]
        with conn.cursor() as curs:
            curs.execute(self.prelude_statement)  # SET LOCAL lock_timeout; log lock; NOTIFY
            curs.execute(
                self.insert_chained_statement,
                [
                    [s.originator_id for s in stored_events],
                    [s.originator_version for s in stored_events],
                    [s.topic for s in stored_events],
                    [s.state for s in stored_events],
                    list(hashes),
                ],
            )
            returned = {
                (row["originator_id"], row["originator_version"]): int(row["notification_id"])
                for row in curs.fetchall()
            }
        return [returned[(s.originator_id, s.originator_version)] for s in stored_events]
