"""API keys for tests that call the submitter: a real key in the test's database, in the ring."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import psycopg

from shared import keys
from shared.domain import DEFAULT_TENANT
from shared.keys import KeyRing


def issue_key(
    postgres_url: str,
    ring: KeyRing | None = None,
    tenant: str = DEFAULT_TENANT,
    scopes: Sequence[str] = ("admin",),
    name: str = "test",
) -> str:
    """Creates a key (the table too, when missing) and, given a ring, loads it there."""
    key = keys.issue(postgres_url, tenant, scopes, name)
    if ring is not None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            ring.refresh(conn, full=True)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def actor_of(headers: dict[str, str] | httpx.Headers, tenant: str = DEFAULT_TENANT) -> str:
    """The actor the log records for requests with these headers' key."""
    key_id = headers["Authorization"].split()[1].split("_")[1]
    return f"key:{key_id}@{tenant}"
