"""API keys: created once and shown once, stored only as a hash, checked from a cache in memory.

A key reads ``jt_<id>_<secret>``: ``id`` (12 hex digits) names the row and is safe to show and log;
``secret`` is 32 random bytes (256 bits, URL-safe base64). The table ``jobtrail_api_keys`` keeps
the id, the tenant, the scopes, a name, and SHA-256 of the whole key (a slow password hash buys
nothing for 256 random bits, and a fast one keeps the check off the request's profile).

``KeyRing`` is what a submitter will check keys against: every key in memory; its owner calls
``refresh`` often (every half second is the plan), which reads only the rows changed since the
last refresh (and every ``FULL_EVERY_S`` the whole table, so a row deleted by hand is dropped
too), so a revoked key stops working within a second without a query per request.
``KeyRing.check`` never touches the network.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from shared.domain.job import DEFAULT_TENANT, TENANT_NAME
from shared.eventstore.locks import API_KEYS_DDL
from shared.postgres import connect

TABLE = "jobtrail_api_keys"
SCOPES = ("submit", "read", "cancel", "audit", "admin")
"""submit: POST jobs; read: jobs, events, lists; cancel: cancel and requeue; audit: the log's
history and exports; admin: metrics, dead letters, quarantine, and every other tenant's keys."""

_KEY = re.compile(r"jt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME_MAX = 100

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL DEFAULT '',
    scopes text[] NOT NULL,
    key_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS {TABLE}_changed ON {TABLE} (changed_at)
"""


class KeySpecError(ValueError):
    """A tenant, scope or name a key cannot have; the message names what to fix."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key's id, its tenant and scopes."""

    key_id: str
    tenant: str
    scopes: frozenset[str]
    name: str = ""

    @property
    def actor(self) -> str:
        """What the log records as the actor of this principal's commands."""
        return f"key:{self.key_id}@{self.tenant}"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class KeyInfo:
    """A row of the key table, without its hash (what ``jobtrail keys list`` shows)."""

    id: str
    tenant: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def check_tenant(tenant: str) -> str:
    if not TENANT_NAME.fullmatch(tenant):
        raise KeySpecError(
            f"tenant {tenant[:80]!r}: 1-63 characters, lower-case letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return tenant


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise KeySpecError(
            f"scopes {', '.join(unknown) or '(none)'}: choose from {', '.join(SCOPES)}"
        )
    return chosen


def check_name(name: str) -> str:
    if len(name) > _NAME_MAX or not name.isprintable():
        raise KeySpecError(f"name: at most {_NAME_MAX} printable characters")
    return name


def create_table(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [API_KEYS_DDL])  # concurrent first starts
        for statement in DDL.split(";"):
            if statement.strip():
                conn.execute(statement)


def create_key(
    conn: psycopg.Connection[Any], tenant: str, scopes: Sequence[str], name: str = ""
) -> tuple[KeyInfo, str]:
    """Stores a new key's hash; returns its row and the key itself (the only time it exists in
    clear)."""
    tenant, chosen, name = check_tenant(tenant), check_scopes(scopes), check_name(name)
    key_id = secrets.token_hex(6)
    key = f"jt_{key_id}_{secrets.token_urlsafe(32)}"
    (row,) = _rows(
        conn,
        sql.SQL(
            "INSERT INTO {} (id, tenant, name, scopes, key_hash) VALUES (%s, %s, %s, %s, %s) "
            "RETURNING id, tenant, name, scopes, created_at, revoked_at"
        ).format(sql.Identifier(TABLE)),
        [key_id, tenant, name, list(chosen), digest(key)],
    )
    return _info(row), key


def issue(
    postgres_url: str,
    tenant: str = DEFAULT_TENANT,
    scopes: Sequence[str] = ("admin",),
    name: str = "",
) -> str:
    """Creates a key (and the table, when missing) on its own connection; returns the key."""
    with connect(postgres_url) as conn:
        create_table(conn)
        return create_key(conn, tenant, scopes, name)[1]


def list_keys(conn: psycopg.Connection[Any], tenant: str | None = None) -> list[KeyInfo]:
    rows = _rows(
        conn,
        sql.SQL(
            "SELECT id, tenant, name, scopes, created_at, revoked_at FROM {} "
            "WHERE %(tenant)s::text IS NULL OR tenant = %(tenant)s ORDER BY created_at, id"
        ).format(sql.Identifier(TABLE)),
        {"tenant": tenant},
    )
    return [_info(row) for row in rows]


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> KeyInfo | None:
    """Revokes a key (idempotent: revoking twice keeps the first time); None when unknown."""
    rows = _rows(
        conn,
        sql.SQL(
            "UPDATE {} SET revoked_at = coalesce(revoked_at, now()), "
            "changed_at = clock_timestamp() WHERE id = %s "
            "RETURNING id, tenant, name, scopes, created_at, revoked_at"
        ).format(sql.Identifier(TABLE)),
        [key_id],
    )
    return _info(rows[0]) if rows else None


def _rows(conn: psycopg.Connection[Any], query: sql.Composed, params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _info(row: dict[str, Any]) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        tenant=row["tenant"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


OVERLAP = timedelta(seconds=10)
FULL_EVERY_S = 60.0


@dataclass(frozen=True)
class _Entry:
    key_hash: bytes
    principal: Principal


class KeyRing:
    """Every live key in memory; ``refresh`` reads the rows changed since the last one."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._since: datetime | None = None
        self._full_at = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def refresh(self, conn: psycopg.Connection[Any], *, full: bool = False) -> int:
        """Applies the rows changed since the last refresh; returns how many it read. The window
        reaches ``OVERLAP`` (10 s) back: a change stamped before the newest row seen but committed
        after it (two writers at once) is still read; reading a row again changes nothing. A
        ``full`` refresh (forced, or due every ``FULL_EVERY_S``) reloads the whole table."""
        if full or time.monotonic() - self._full_at >= FULL_EVERY_S:
            full, self._since, self._full_at = True, None, time.monotonic()
        rows = _rows(
            conn,
            sql.SQL(
                "SELECT id, tenant, name, scopes, key_hash, revoked_at, changed_at FROM {} "
                "WHERE %(since)s::timestamptz IS NULL OR changed_at >= %(since)s - %(overlap)s "
                "ORDER BY changed_at"
            ).format(sql.Identifier(TABLE)),
            {"since": self._since, "overlap": OVERLAP},
        )
        # A full reload fills a new dict and swaps it in at once: ``check`` (on the event loop,
        # while this runs in a thread) never sees the ring half filled
        entries = {} if full else self._entries
        for values in rows:
            if values["revoked_at"] is not None:
                entries.pop(values["id"], None)
            else:
                entries[values["id"]] = _Entry(
                    bytes(values["key_hash"]),
                    Principal(
                        values["id"], values["tenant"], frozenset(values["scopes"]), values["name"]
                    ),
                )
            self._since = values["changed_at"]
        self._entries = entries
        return len(rows)

    def check(self, key: str) -> Principal | None:
        """The principal of a live key; None for a malformed, unknown, wrong or revoked one."""
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        entry = self._entries.get(match.group(1))
        if entry is None or not hmac.compare_digest(entry.key_hash, digest(key)):
            return None
        return entry.principal
