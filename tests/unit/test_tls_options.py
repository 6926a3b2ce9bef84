"""TLS options in a connection URL reach the client that connects, on every settings path.

No network: each client is built (or its connect call is intercepted) and inspected. The pool
that writes the log is covered by tests/integration/test_store_tls.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from yarl import URL

from shared.messaging import make_broker
from shared.redis_view import RedisView
from shared.settings import BusSettings, RedisSettings, StoreSettings

PG_URL = (
    "postgresql://svc:pw@db.example:5432/jobtrail"
    "?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem&sslcert=/etc/ssl/c.pem&sslkey=/etc/ssl/k.pem"
)


class Intercepted(Exception):
    """Raised instead of connecting; carries what the connection would have used."""

    def __init__(self, conninfo: str, kwargs: dict[str, Any]) -> None:
        super().__init__("intercepted")
        self.options = conninfo_to_dict(
            make_conninfo(conninfo, **{k: v for k, v in kwargs.items() if _libpq(k)})
        )


def _libpq(key: str) -> bool:
    return key not in ("autocommit", "row_factory", "prepare_threshold", "cursor_factory")


def _assert_tls(options: dict[str, Any]) -> None:
    assert options["sslmode"] == "verify-full"
    assert options["sslrootcert"] == "/etc/ssl/ca.pem"
    assert options["sslcert"] == "/etc/ssl/c.pem" and options["sslkey"] == "/etc/ssl/k.pem"
    assert options["host"] == "db.example" and options["user"] == "svc"


@pytest.fixture
def intercept(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(conninfo: str = "", **kwargs: Any) -> Any:
        raise Intercepted(conninfo, kwargs)

    async def aconnect(conninfo: str = "", **kwargs: Any) -> Any:
        raise Intercepted(conninfo, kwargs)

    monkeypatch.setattr(psycopg, "connect", connect)
    monkeypatch.setattr(psycopg.AsyncConnection, "connect", aconnect)


@pytest.mark.usefixtures("intercept")
def test_the_connection_factory_keeps_the_url_s_tls_options() -> None:
    from shared import postgres

    for target in (StoreSettings(postgres_url=PG_URL), PG_URL):
        with pytest.raises(Intercepted) as caught:
            postgres.connect(target)
        _assert_tls(caught.value.options)
        with pytest.raises(Intercepted) as caught:
            asyncio.run(postgres.connect_async(target))
        _assert_tls(caught.value.options)


@pytest.mark.usefixtures("intercept")
def test_every_connection_gets_the_one_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import postgres

    monkeypatch.setenv("JOBTRAIL_POSTGRES_CONNECT_TIMEOUT_S", "7")
    with pytest.raises(Intercepted) as caught:
        postgres.connect(PG_URL + "&connect_timeout=30", dbname="postgres")
    assert caught.value.options["connect_timeout"] == "7"  # as the log's pool is given it
    assert caught.value.options["dbname"] == "postgres"
    assert StoreSettings().eventsourcing_env()["POSTGRES_CONNECT_TIMEOUT"] == "7"


@pytest.mark.usefixtures("intercept")
def test_the_store_s_schema_lock_and_database_creation_keep_the_url_s_tls_options() -> None:
    from shared.eventstore import schema

    with pytest.raises(Intercepted) as caught, schema.creating(StoreSettings(postgres_url=PG_URL)):
        pass
    _assert_tls(caught.value.options)
    with pytest.raises(Intercepted) as caught:
        schema.ensure_database(PG_URL)
    _assert_tls(caught.value.options)


@pytest.mark.usefixtures("intercept")
def test_leader_election_and_wakeups_keep_the_url_s_tls_options() -> None:
    from shared.leader import Leadership

    async def term() -> None:
        await Leadership(PG_URL, "scheduler")._term(asyncio.sleep)  # type: ignore[arg-type]

    with pytest.raises(Intercepted) as caught:
        asyncio.run(term())
    _assert_tls(caught.value.options)


@pytest.mark.usefixtures("intercept")
def test_the_projector_s_log_reader_keeps_the_url_s_tls_options() -> None:
    from services.projector.reader import LogReader

    class Store:
        settings = StoreSettings(postgres_url=PG_URL)
        events_table = "jobtrail_events"

    reader = LogReader.__new__(LogReader)
    reader.store = Store()  # type: ignore[assignment]
    reader._conn = None
    reader._query = "SELECT 1"  # type: ignore[assignment]
    with pytest.raises(Intercepted) as caught:
        asyncio.run(reader._read(0, 1))
    _assert_tls(caught.value.options)


@pytest.mark.usefixtures("intercept")
def test_the_cli_s_connections_keep_the_url_s_tls_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cli.database import connect

    monkeypatch.setenv("JOBTRAIL_POSTGRES_URL", PG_URL)
    with pytest.raises(Intercepted) as caught:
        connect()
    _assert_tls(caught.value.options)


def test_a_rediss_url_gives_the_redis_client_tls() -> None:
    url = (
        "rediss://jobtrail:pw@cache.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
    )
    view = RedisView(RedisSettings(redis_url=url))
    pool = view.redis.connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert pool.connection_kwargs["username"] == "jobtrail"
    # the scheduler builds its own client from the same URL, the same way
    assert Redis.from_url(url).connection_pool.connection_class is SSLConnection


def test_a_redis_url_without_tls_is_plain() -> None:
    view = RedisView(RedisSettings(redis_url="redis://127.0.0.1:6379/0"))
    assert view.redis.connection_pool.connection_class is not SSLConnection


async def test_an_amqps_url_gives_the_broker_connection_tls() -> None:
    url = "amqps://jobtrail_worker:pw@rabbit.example:5671/?cafile=/etc/ca.pem&certfile=/c.pem&keyfile=/k.pem"
    broker = make_broker(BusSettings(amqp_url=url))
    kwargs = broker._connection_kwargs  # what FastStream hands aio-pika's connect_robust
    given = URL(kwargs["url"])
    assert given.scheme == "amqps" and given.port == 5671
    # aio-pika passes the URL to aiormq, which picks its TLS transport and certificates from it
    connection = aiormq.Connection(given)
    assert type(connection._transport_factory).__name__ == "TLSTransportFactory"
    assert connection.ssl_certs.cafile == "/etc/ca.pem"
    assert connection.ssl_certs.cert == "/c.pem" and connection.ssl_certs.key == "/k.pem"
    assert connection.ssl_certs.verify  # on unless the URL says no_verify_ssl=1


async def test_an_amqp_url_without_tls_is_plain() -> None:
    broker = make_broker(BusSettings(amqp_url="amqp://u:p@127.0.0.1:5672/"))
    connection = aiormq.Connection(URL(broker._connection_kwargs["url"]))
    assert type(connection._transport_factory).__name__ == "TCPTransportFactory"
