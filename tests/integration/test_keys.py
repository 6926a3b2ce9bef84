"""API keys on real PostgreSQL: created once and shown once, stored as a hash, revoked for every
key ring at its next refresh, and the CLI that manages them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner

from services.cli.app import app
from shared import keys
from tests.services import fresh_database


@pytest.fixture
def url(postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fresh_database(postgres_server, "keys") as database:
        monkeypatch.setenv("JOBTRAIL_POSTGRES_URL", database)
        yield database


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["keys", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def ring_of(url: str) -> keys.KeyRing:
    ring = keys.KeyRing()
    with psycopg.connect(url, autocommit=True) as conn:
        ring.refresh(conn)
    return ring


def test_a_created_key_is_printed_once_stored_as_a_hash_and_checked_from_memory(url: str) -> None:
    # When a key is created with the CLI
    code, output = run("create", "--tenant", "acme", "--scopes", "submit,read", "--name", "ci")

    # Then it is the last line alone, and only its hash is in the table
    assert code == 0, output
    key = output.strip().splitlines()[-1]
    assert re.fullmatch(r"jt_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        (row,) = conn.execute("SELECT * FROM jobtrail_api_keys").fetchall()
    assert key not in str(row) and key.split("_", 2)[2] not in str(row)
    assert bytes(row["key_hash"]) == keys.digest(key)

    # And a key ring knows it, with its tenant and scopes; a wrong or malformed one is nobody
    ring = ring_of(url)
    principal = ring.check(key)
    assert principal is not None
    assert (principal.tenant, principal.scopes) == ("acme", frozenset({"submit", "read"}))
    assert principal.actor == f"key:{row['id']}@acme"
    assert principal.allows("read") and not principal.allows("cancel")
    assert ring.check(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert ring.check("Bearer " + key) is None and ring.check("") is None


def test_a_revoked_key_is_refused_at_the_next_refresh_of_every_ring(url: str) -> None:
    # Given a key two rings know
    key = run("create", "--tenant", "acme")[1].strip().splitlines()[-1]
    rings = [ring_of(url), ring_of(url)]
    assert all(r.check(key) is not None for r in rings)
    key_id = key.split("_")[1]

    # When it is revoked with the CLI
    code, output = run("revoke", key_id)
    assert code == 0 and "revoked" in output

    # Then each ring refuses it after its next refresh, and the list shows when
    with psycopg.connect(url, autocommit=True) as conn:
        for ring in rings:
            ring.refresh(conn)
    assert all(r.check(key) is None for r in rings)
    assert re.search(rf"{key_id}.*acme.*\d{{4}}-\d\d-\d\d.*\d{{4}}-\d\d-\d\d", run("list")[1])


def test_a_change_committed_after_a_newer_one_is_still_read(url: str) -> None:
    # Given a ring that has already read a change newer than a revocation still being committed
    # (its timestamp is taken before the other change, its commit lands after)
    key = run("create", "--tenant", "acme")[1].strip().splitlines()[-1]
    ring = ring_of(url)
    run("create", "--tenant", "other")
    ring_conn = psycopg.connect(url, autocommit=True)
    ring.refresh(ring_conn)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobtrail_api_keys SET revoked_at = now(), changed_at = %s WHERE id = %s",
            [
                conn.execute("SELECT max(changed_at) FROM jobtrail_api_keys").fetchone()[0]  # type: ignore[index]
                - timedelta(seconds=2),
                key.split("_")[1],
            ],
        )

    # When the ring refreshes, then the revocation is seen
    ring.refresh(ring_conn)
    ring_conn.close()
    assert ring.check(key) is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--tenant", "Acme Corp"], "tenant"),
        (["--tenant", "acme", "--scopes", "submit,root"], "scopes root"),
        (["--tenant", "acme", "--scopes", ","], "scopes (none)"),
        (["--tenant", "acme", "--name", "x" * 101], "name"),
    ],
)
def test_a_key_that_cannot_exist_is_refused_naming_what_to_fix(
    url: str, args: list[str], named: str
) -> None:
    code, output = run("create", *args)
    assert code == 2 and named in output, output
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM jobtrail_api_keys").fetchone() == (0,)


def test_revoking_an_unknown_key_says_so(url: str) -> None:
    code, output = run("revoke", "0123456789ab")
    assert code == 2 and "no key with id" in output


def test_a_key_deleted_by_hand_is_dropped_at_the_next_full_refresh(url: str) -> None:
    key = run("create", "--tenant", "acme")[1].strip().splitlines()[-1]
    ring = ring_of(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM jobtrail_api_keys")
        ring.refresh(conn)
        assert ring.check(key) is not None  # an incremental refresh cannot see a deletion
        ring.refresh(conn, full=True)
    assert ring.check(key) is None
