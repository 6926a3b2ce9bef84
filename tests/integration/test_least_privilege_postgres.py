"""The services' PostgreSQL role: it runs the store and cannot change history or keys.

``jobtrail db init`` (as the owner) then ``jobtrail db grant ROLE``; the role then appends, reads
and group-commits, and PostgreSQL itself refuses (permission denied, before any trigger runs)
UPDATE, DELETE and TRUNCATE on the log and every write to the API key table. Appends serialise
on the advisory log lock (recorder.LOG_LOCK), which needs none of those rights.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner

from services.cli.app import app
from shared.domain import Job
from shared.eventstore import AsyncJobStore, JobStore
from shared.eventstore.commands import ConcurrencyError
from shared.eventstore.locks import LOG_LOCK
from shared.settings import StoreSettings
from tests.jobs import CAUSE
from tests.services import fresh_database


@pytest.fixture
def owner_url(postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database set up by ``jobtrail db init``, as the owner."""
    with fresh_database(postgres_server, "lp") as url:
        monkeypatch.setenv("JOBTRAIL_POSTGRES_URL", url)
        result = CliRunner().invoke(app, ["db", "init"])
        assert result.exit_code == 0, result.output
        yield url


@pytest.fixture
def service_url(owner_url: str) -> Iterator[str]:
    """A login role given ``jobtrail db grant``; yields the URL that connects as it."""
    name = f"jobtrail_lp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner_url, autocommit=True) as owner:
        owner.execute(f'CREATE ROLE "{name}" LOGIN')
    try:
        result = CliRunner().invoke(app, ["db", "grant", name])
        assert result.exit_code == 0, result.output
        yield owner_url.replace("postgres@", f"{name}@")
    finally:
        with psycopg.connect(owner_url, autocommit=True) as owner:
            owner.execute(f'DROP OWNED BY "{name}"')
            owner.execute(f'DROP ROLE "{name}"')


def settings(url: str, **more: Any) -> StoreSettings:
    return StoreSettings(postgres_url=url, postgres_create_schema=False, **more)


def submit(job_id: uuid.UUID) -> Any:
    return lambda _: Job.submit(CAUSE, job_type="t", payload={"i": 1}, job_id=job_id)


def test_db_init_creates_the_key_table(owner_url: str) -> None:
    with psycopg.connect(owner_url) as conn:
        found = conn.execute("SELECT to_regclass('jobtrail_api_keys') IS NOT NULL").fetchone()
    assert found == (True,)


def test_the_service_role_runs_the_store(service_url: str) -> None:
    # append and read, one command at a time
    store = JobStore(settings(service_url))
    try:
        job_id = uuid.uuid4()
        store.execute(job_id, submit(job_id))
        assert store.get(job_id).version == 1
        assert store.max_notification_id() >= 1
    finally:
        store.close()

    # group commit: many concurrent commands in few transactions
    async def many() -> tuple[int, int]:
        async with AsyncJobStore(JobStore(settings(service_url))) as aio:
            ids = [uuid.uuid4() for _ in range(100)]
            await asyncio.gather(*(aio.execute(i, submit(i)) for i in ids))
            assert len(await aio.history(ids[-1])) == 1
            return aio.store.stats.commands, aio.store.stats.batches

    commands, batches = asyncio.run(many())
    assert commands == 100 and batches < 100


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE jobtrail_events SET topic = topic",
        "DELETE FROM jobtrail_events",
        "TRUNCATE jobtrail_events",
        "UPDATE jobtrail_checkpoints SET head = head",
        "INSERT INTO jobtrail_api_keys (id, tenant, scopes, key_hash) "
        "VALUES ('000000000000', 't', '{admin}', '\\x00')",
        "UPDATE jobtrail_api_keys SET revoked_at = NULL",
        "DELETE FROM jobtrail_api_keys",
    ],
)
def test_the_service_role_is_denied_by_privileges_not_only_by_triggers(
    service_url: str, statement: str
) -> None:
    # "permission denied for table ...": the privilege check, before any trigger
    denied = pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied")
    with psycopg.connect(service_url) as conn, denied:
        conn.execute(statement)


def test_the_service_role_reads_the_key_table(service_url: str) -> None:
    with psycopg.connect(service_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobtrail_api_keys").fetchone() == (0,)


def test_an_append_waits_for_the_log_lock_so_ids_commit_in_order(owner_url: str) -> None:
    """A transaction that took the log lock and a notification id, not yet committed, holds
    every other append back: a follower never sees a later id commit before an earlier one."""
    store = JobStore(settings(owner_url))
    try:
        with psycopg.connect(owner_url, row_factory=dict_row) as first:
            first.execute(store.recorder.prelude_statement)
            row = first.execute(
                "INSERT INTO jobtrail_events (originator_id, originator_version, topic, state) "
                "VALUES (%s, 1, 'test:held', '\\x7b7d') RETURNING notification_id",
                [uuid.uuid4()],
            ).fetchone()
            assert row is not None
            held = row["notification_id"]
            later: list[int] = []
            job_id = uuid.uuid4()

            def append() -> None:
                outcome = store.execute_batch([(job_id, submit(job_id))])[0]
                later.extend(outcome.notification_ids)

            thread = threading.Thread(target=append)
            thread.start()
            thread.join(1.5)
            assert thread.is_alive(), "the append committed while an earlier id was in flight"
            first.commit()
            thread.join(10)
        assert later and later[0] > held
    finally:
        store.close()


def test_a_writer_that_waits_too_long_for_the_log_lock_fails(service_url: str) -> None:
    """``JOBTRAIL_POSTGRES_LOCK_TIMEOUT_S`` bounds the wait for the log lock, as it bounded the
    table lock's: the append fails with LockNotAvailable (retried, then ConcurrencyError), as
    an append behind a held table lock did."""
    store = JobStore(
        settings(
            service_url,
            postgres_lock_timeout_s=1,
            store_conflict_retries=0,
            store_retry_budget_s=0.1,
        )
    )
    try:
        with psycopg.connect(service_url) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", LOG_LOCK)
            job_id = uuid.uuid4()
            with pytest.raises(ConcurrencyError) as caught:
                store.execute(job_id, submit(job_id))
            cause = caught.value.__cause__  # eventsourcing's OperationalError, wrapping ...
            assert cause is not None and "lock timeout" in str(cause)
            assert isinstance(cause.__cause__, psycopg.errors.LockNotAvailable)  # ... 55P03
    finally:
        store.close()


def test_db_grant_create_makes_the_login_role_and_grants_it(
    owner_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"jobtrail_lp_{uuid.uuid4().hex[:8]}"
    monkeypatch.delenv("JOBTRAIL_SERVICE_ROLE_PASSWORD", raising=False)
    refused = CliRunner().invoke(app, ["db", "grant", name, "--create"])
    assert refused.exit_code == 2 and "JOBTRAIL_SERVICE_ROLE_PASSWORD" in refused.output
    monkeypatch.setenv("JOBTRAIL_SERVICE_ROLE_PASSWORD", "s3cret-for-the-test")
    try:
        result = CliRunner().invoke(app, ["db", "grant", name, "--create"])
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.output
        with psycopg.connect(owner_url) as owner:
            row = owner.execute(
                "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, "
                "has_table_privilege(rolname, 'jobtrail_events', 'INSERT'), "
                "has_table_privilege(rolname, 'jobtrail_events', 'UPDATE') "
                "FROM pg_roles WHERE rolname = %s",
                [name],
            ).fetchone()
        assert row == (True, False, False, False, True, False)
    finally:
        with psycopg.connect(owner_url, autocommit=True) as owner:
            owner.execute(f'DROP OWNED BY "{name}"')
            owner.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_the_owner_is_never_made_the_service_role(owner_url: str) -> None:
    from services.cli.roles import RoleError, ensure_role

    refused = pytest.raises(RoleError, match="owner or a superuser")
    with psycopg.connect(owner_url, autocommit=True, row_factory=dict_row) as owner, refused:
        ensure_role(owner, "postgres", None)


def test_grant_takes_back_what_an_older_grant_gave(owner_url: str, service_url: str) -> None:
    role = service_url.split("://", 1)[1].split("@", 1)[0]
    with psycopg.connect(owner_url, autocommit=True) as owner:
        owner.execute(f'GRANT UPDATE ON jobtrail_events, jobtrail_api_keys TO "{role}"')
    result = CliRunner().invoke(app, ["db", "grant", role])
    assert result.exit_code == 0, result.output
    with psycopg.connect(owner_url) as owner:
        row = owner.execute(
            "SELECT has_table_privilege(%s, 'jobtrail_events', 'UPDATE'), "
            "has_table_privilege(%s, 'jobtrail_api_keys', 'UPDATE'), "
            "has_table_privilege(%s, 'jobtrail_events', 'INSERT')",
            [role, role, role],
        ).fetchone()
    assert row == (False, False, True)
