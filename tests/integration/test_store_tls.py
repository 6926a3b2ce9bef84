"""The pool that writes the log honours the query options of JOBTRAIL_POSTGRES_URL (sslmode,
sslrootcert, application_name ...), like every other connection to PostgreSQL. The local test
server has no TLS: ``?sslmode=require`` must fail there, never fall back to plain TCP."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlencode

import psycopg
import pytest
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.eventstore import JobStore
from shared.eventstore.store import JobLog
from shared.settings import StoreSettings


def with_options(url: str, **options: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(options)


def test_the_pool_is_given_every_option_of_the_url() -> None:
    # Given a URL with TLS and session options
    url = with_options(
        "postgresql://svc:pw@db.example:6432/jobtrail",
        sslmode="verify-full",
        sslrootcert="/etc/ssl/ca.pem",
        target_session_attrs="read-write",
        application_name="jobtrail-submitter",
        options="-c statement_timeout=5000",
    )
    env = StoreSettings(postgres_url=url).eventsourcing_env()

    # When eventsourcing's factory builds the log's pool (no connection is made yet)
    factory = InfrastructureFactory.construct(Environment(JobLog.name, env))
    pool = factory.datastore.pool  # type: ignore[attr-defined]
    assert isinstance(pool.kwargs, dict)

    # Then the pool connects with every option of the URL, and the URL's host, user and database
    kwargs = {k: v for k, v in pool.kwargs.items() if k != "row_factory"}  # not libpq's
    given = conninfo_to_dict(make_conninfo(str(pool.conninfo), **kwargs))
    assert given["sslmode"] == "verify-full"
    assert given["sslrootcert"] == "/etc/ssl/ca.pem"
    assert given["target_session_attrs"] == "read-write"
    assert given["application_name"] == "jobtrail-submitter"
    assert given["options"] == "-c statement_timeout=5000"
    assert (given["host"], str(given["port"]), given["user"], given["dbname"]) == (
        "db.example",
        "6432",
        "svc",
        "jobtrail",
    )


def test_sslmode_require_fails_through_the_pool_against_a_server_without_tls(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the URL of the test server (no TLS) with ?sslmode=require
    settings = StoreSettings(
        postgres_url=with_options(postgres_url, sslmode="require"),
        postgres_create_schema=False,
    )

    # When the log's pool (eventsourcing's application alone) and the whole store open
    # Then both fail, with the SSL error in what the pool logged; nothing connects without TLS
    with caplog.at_level(logging.WARNING, logger="psycopg.pool"), pytest.raises(Exception):
        JobLog(env=settings.eventsourcing_env()).close()
    assert "SSL" in caplog.text, caplog.text
    with pytest.raises(psycopg.OperationalError, match="SSL"):
        JobStore(settings).close()


def test_application_name_of_the_url_shows_in_pg_stat_activity(postgres_url: str) -> None:
    # Given a URL naming the application
    name = f"jt-tls-{uuid.uuid4().hex[:8]}"
    store = JobStore(StoreSettings(postgres_url=with_options(postgres_url, application_name=name)))
    try:
        # When the store's pool connects
        with store.recorder.datastore.get_connection() as conn:
            row = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            ).fetchone()
        # Then PostgreSQL sees the name on the pool's connection
        assert row is not None
        assert row["application_name"] == name
    finally:
        store.close()
