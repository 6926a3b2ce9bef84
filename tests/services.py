"""Finds PostgreSQL, RabbitMQ and Redis for the tests.

Order: a URL from the environment; else a testcontainers container when a Docker engine answers;
else the local default. A service that does not answer skips its tests, except under CI=true,
where it fails them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from contracts.names import Topology
from shared.servers import BY_KEY, SERVERS, answers

DEFAULTS = {
    server.key: (
        # the tests make databases of their own: the server's `postgres` database is the door
        urlunsplit(urlsplit(server.url)._replace(path="/postgres"))
        if server.key == "postgres"
        else server.url
    )
    for server in SERVERS
}
"""The local servers (shared/servers.py, the table the CLI and scripts/ensure-services.sh use)."""
START = {server.key: server.start for server in SERVERS}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=1).ping()
        return True
    except Exception:
        return False


def _container(kind: str) -> tuple[AbstractContextManager[Any], str]:
    if kind == "postgres":
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer("postgres:15", driver=None)
        return pg, ""
    if kind == "rabbitmq":
        from testcontainers.rabbitmq import RabbitMqContainer

        return RabbitMqContainer("rabbitmq:3.13"), ""
    from testcontainers.redis import RedisContainer

    return RedisContainer("redis:7"), ""


def _container_url(kind: str, container: Any) -> str:
    host = container.get_container_host_ip()
    if kind == "postgres":
        return str(container.get_connection_url()).replace("postgresql+psycopg2", "postgresql")
    if kind == "rabbitmq":
        port = container.get_exposed_port(5672)
        return f"amqp://guest:guest@{host}:{port}/"
    return f"redis://{host}:{container.get_exposed_port(6379)}/0"


def resolve(kind: str, stack: ExitStack) -> str:
    """The URL of a live ``kind`` service, or a skip (a failure under CI=true)."""
    server = BY_KEY[kind]
    url = os.environ.get(server.variable)
    if not url and _docker_answers():
        container, _ = _container(kind)
        started = stack.enter_context(container)
        url = _container_url(kind, started)
    url = url or DEFAULTS[kind]
    if not answers(url):
        message = f"{kind} does not answer at {url}; start it with: {server.start}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


def delete_topology(
    amqp_url: str, prefix: str, work_queues: Iterable[str] = ("default", "cpu", "io")
) -> None:
    """Deletes every queue and exchange made under ``prefix`` (quorum queues are heavy: left
    behind, hundreds of them slow RabbitMQ to a halt)."""
    import asyncio

    import aio_pika

    topology = Topology(prefix)

    async def delete() -> None:
        connection = await aio_pika.connect(amqp_url, timeout=10)
        async with connection:
            for name in topology.queue_names(work_queues):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.queue_delete(name), 10)
            for name in topology.exchange_names:
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.exchange_delete(name), 10)

    with contextlib.suppress(Exception):
        asyncio.run(delete())


@contextlib.contextmanager
def fresh_database(server_url: str, purpose: str) -> Iterator[str]:
    """A new database on the server, dropped afterwards."""
    name = f"jobtrail_{purpose}_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(server_url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def forget_prefix(amqp_url: str, redis_url: str, prefix: str) -> None:
    """Deletes what a system of its own left under ``prefix``: its RabbitMQ queues and
    exchanges and its Redis keys."""
    import redis

    delete_topology(amqp_url, prefix)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()
