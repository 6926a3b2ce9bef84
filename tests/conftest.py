"""Session-wide fixtures: one database, one RabbitMQ prefix and one Redis db per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.services import delete_topology, fresh_database, resolve


@pytest.fixture(scope="session")
def service_stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def postgres_server(service_stack: ExitStack) -> str:
    return resolve("postgres", service_stack)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database for this test session's in-process tests."""
    with fresh_database(postgres_server, "test") as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url(service_stack: ExitStack) -> str:
    return resolve("rabbitmq", service_stack)


@pytest.fixture(scope="session")
def topology_prefix() -> str:
    """RabbitMQ names of this session live under their own prefix."""
    return f"jt-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def redis_url(service_stack: ExitStack) -> str:
    url = resolve("redis", service_stack)
    parts = urlsplit(url)
    db = 1 + uuid.uuid4().int % 15  # db 0 is left to the demo
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def rabbit_cleanup(amqp_url: str, topology_prefix: str) -> Iterator[None]:
    """Deletes this session's exchanges and queues at the end."""
    yield
    delete_topology(amqp_url, topology_prefix)
