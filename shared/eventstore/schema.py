"""The log's schema in PostgreSQL: every table, trigger and grant jobtrail creates, in one place.

- ``ensure_database``: the database named in the URL, created when missing.
- ``creating``: the session lock held while eventsourcing creates its events table and type.
- ``create_derived``: the derived tables kept in step with the log (``shared.eventstore.tables``)
  and the tables beside it (dead letters, quarantine, follower positions).
- ``create_integrity``: the ``chain_hash`` column, the ``jobtrail_checkpoints`` table, and
  triggers that refuse UPDATE, DELETE and TRUNCATE on both tables for every role, the owner
  included, unless the owner (or a member of the owner's role) opted into the maintenance path
  in that transaction (``SET LOCAL jobtrail.maintenance = 'on'``, used only by ``jobtrail
  archive``); any role may set the variable, so the trigger checks who set it.
- ``grant``: what a service role needs, and no more (see docs/audit.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from shared.eventstore import locks
from shared.postgres import connect
from shared.settings import StoreSettings

EVENTS = "jobtrail_events"
CHECKPOINTS = "jobtrail_checkpoints"
KEYS = "jobtrail_api_keys"  # shared/keys.py TABLE (not imported: keys.py is the API's module)

DERIVED_DDL = """
CREATE TABLE IF NOT EXISTS jobtrail_timers (
    job_id uuid PRIMARY KEY,
    due_at timestamptz NOT NULL,
    delayed boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS jobtrail_timers_due ON jobtrail_timers (due_at);
CREATE TABLE IF NOT EXISTS jobtrail_leases (
    job_id uuid PRIMARY KEY,
    attempt integer NOT NULL,
    worker_id text NOT NULL,
    expires_at timestamptz NOT NULL,
    cancel_requested boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS jobtrail_leases_expiry ON jobtrail_leases (expires_at);
CREATE TABLE IF NOT EXISTS jobtrail_dispatches (
    job_id uuid PRIMARY KEY,
    attempt integer NOT NULL,
    sent_at timestamptz NOT NULL,
    resends integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobtrail_dispatches_sent ON jobtrail_dispatches (sent_at);
CREATE TABLE IF NOT EXISTS jobtrail_dead_letters (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    queue text NOT NULL,
    reason text NOT NULL,
    job_id uuid,
    message_id text,
    correlation_id text,
    error text NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS jobtrail_dead_letters_job ON jobtrail_dead_letters (job_id, id);
CREATE TABLE IF NOT EXISTS jobtrail_quarantine (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    stage text NOT NULL,
    notification_id bigint NOT NULL,
    job_id uuid,
    version bigint,
    event_type text NOT NULL,
    error text NOT NULL,
    action text NOT NULL,
    UNIQUE (stage, notification_id)
);
CREATE INDEX IF NOT EXISTS jobtrail_quarantine_job ON jobtrail_quarantine (job_id, id);
ALTER TABLE jobtrail_dead_letters ADD COLUMN IF NOT EXISTS letter_key text;
CREATE UNIQUE INDEX IF NOT EXISTS jobtrail_dead_letters_key ON jobtrail_dead_letters (letter_key);
ALTER TABLE jobtrail_timers ADD COLUMN IF NOT EXISTS version bigint;
CREATE TABLE IF NOT EXISTS jobtrail_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""

_FUNCTION = """
CREATE OR REPLACE FUNCTION jobtrail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('jobtrail.maintenance', true) = 'on'
     AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
  THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'history is never changed; archiving is the only maintenance path '
                 '(docs/audit.md)';
END $$
"""


def _ddl(events: str) -> list[sql.Composed]:
    table = sql.Identifier(events)
    statements = [
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS chain_hash bytea").format(table),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (notification_id bigint PRIMARY KEY, "
            "head bytea NOT NULL, events bigint NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now(), signature bytea)"
        ).format(sql.Identifier(CHECKPOINTS)),
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS seq bigint").format(
            sql.Identifier(CHECKPOINTS)
        ),
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS previous bytea").format(
            sql.Identifier(CHECKPOINTS)
        ),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (seq)").format(
            sql.Identifier(f"{CHECKPOINTS}_seq"), sql.Identifier(CHECKPOINTS)
        ),
        sql.SQL(_FUNCTION).format(),
    ]
    for name in (events, CHECKPOINTS):
        statements += [
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} BEFORE UPDATE OR DELETE ON {} "
                "FOR EACH ROW EXECUTE FUNCTION jobtrail_append_only()"
            ).format(sql.Identifier(f"{name}_append_only"), sql.Identifier(name)),
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} BEFORE TRUNCATE ON {} "
                "FOR EACH STATEMENT EXECUTE FUNCTION jobtrail_append_only()"
            ).format(sql.Identifier(f"{name}_no_truncate"), sql.Identifier(name)),
        ]
    return statements


def create_integrity(conn: psycopg.Connection[Any], events: str = EVENTS) -> None:
    """Adds the chain column, the checkpoints table and the append-only triggers (idempotent)."""
    present = conn.execute(
        "SELECT count(*) AS n FROM pg_trigger WHERE tgname = ANY(%s)",
        [[f"{events}_append_only", f"{events}_no_truncate", f"{CHECKPOINTS}_append_only"]],
    ).fetchone()
    chained = conn.execute(
        "SELECT count(*) AS n FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'previous'",
        [CHECKPOINTS],
    ).fetchone()
    if present is not None and present["n"] == 3 and chained is not None and chained["n"]:
        return  # ALTER TABLE would wait for the table lock every insert holds: skip when done
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [locks.INTEGRITY_DDL])
        for statement in _ddl(events):
            conn.execute(statement)


def grant(
    conn: psycopg.Connection[Any], role: str, *, read_only: bool = False, events: str = EVENTS
) -> None:
    """Grants a service role what the services need: the log may be read and appended to.

    No UPDATE, DELETE or TRUNCATE on the events or checkpoints table: appends serialise on an
    advisory lock (locks.LOG_LOCK), not on a table lock that would need them, and the triggers
    refuse them anyway. The API key table is read only (``jobtrail keys`` runs as the owner). The
    derived tables (timers, leases, positions, ...) are read-write. Rights an older grant gave on
    the log, checkpoint and key tables are revoked first. ``read_only``: an auditor's role,
    SELECT on every jobtrail table and nothing else.
    """
    who = sql.Identifier(role)
    with conn.transaction():
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(who))
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename LIKE 'jobtrail\\_%%'"
        ).fetchall()
        names = [row["tablename"] for row in tables]
        for name in {events, CHECKPOINTS, KEYS} & set(names):  # what an older grant gave
            conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(name), who))
        select_only = names if read_only else [n for n in names if n == KEYS]
        for name in select_only:
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(name), who))
        if read_only:
            return
        for name in (events, CHECKPOINTS):
            conn.execute(
                sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(name), who)
            )
        sequence = conn.execute(
            "SELECT pg_get_serial_sequence(%s, 'notification_id') AS s", [events]
        ).fetchone()
        if sequence and sequence["s"]:
            conn.execute(
                sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(
                    sql.SQL(sequence["s"]), who
                )
            )
        for name in names:
            if name not in (events, CHECKPOINTS, KEYS):
                conn.execute(
                    sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                        sql.Identifier(name), who
                    )
                )


def create_derived(conn: psycopg.Connection[Any]) -> None:
    """Creates the derived tables when they do not exist."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [locks.DERIVED_TABLES_DDL])
        for statement in DERIVED_DDL.split(";"):
            if statement.strip():
                conn.execute(statement)


def create(conn: psycopg.Connection[Any], events: str = EVENTS) -> None:
    """Everything jobtrail adds beside eventsourcing's events table (idempotent)."""
    create_derived(conn)
    create_integrity(conn, events)


@contextmanager
def creating(settings: StoreSettings) -> Iterator[None]:
    """Holds a session advisory lock while eventsourcing creates its table and type.

    ``CREATE TYPE`` has no IF NOT EXISTS: two processes creating the schema at once collide.
    """
    with connect(settings) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [locks.SCHEMA])
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [locks.SCHEMA])


def ensure_database(url: str) -> None:
    """Creates the database named in ``url`` when it does not exist yet."""
    settings = StoreSettings(postgres_url=url)
    name = settings.eventsourcing_env()["POSTGRES_DBNAME"]
    with connect(settings, dbname="postgres") as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
