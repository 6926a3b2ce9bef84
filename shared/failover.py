"""One AMQP URL naming every node of a RabbitMQ cluster, and a connection that moves to the next
node when one refuses or drops it.

Why: a service takes one ``JOBTRAIL_AMQP_URL``, and aio-pika's robust connection reconnects to
the host it was given, forever: with the node gone, the service would wait for that node. A URL
may therefore list several hosts, as libpq does, sharing credentials, virtual host and options::

    amqp://jobtrail_worker:secret@rabbit-1:5672,rabbit-2:5672,rabbit-3:5672/

Each connection attempt (the first one and every reconnection) tries the hosts in turn, starting
after the one it was last connected to, and stops at the first that accepts; FastStream's
channels, consumers and declarations are then restored on that node by aio-pika as usual.
A URL with one host behaves exactly as before (aio-pika's own ``RobustConnection``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from faststream.rabbit import RabbitBroker
from yarl import URL

_HOST = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/?#]*)(?P<rest>.*)$")


def amqp_hosts(url: str) -> list[tuple[str, int | None]]:
    """The ``(host, port)`` pairs of a URL whose host part may be ``h1:p1,h2:p2,...``."""
    match = _URL.match(url)
    if match is None:
        raise ValueError("an AMQP URL looks like amqp://user:password@host:port/vhost")
    hosts = match["netloc"].rpartition("@")[2]
    result: list[tuple[str, int | None]] = []
    for part in hosts.split(","):
        host = _HOST.fullmatch(part.strip())
        if host is None:
            raise ValueError(f"AMQP URL hosts {hosts!r}: each one host or host:port")
        result.append((host["host"].strip("[]"), int(host["port"]) if host["port"] else None))
    return result


def first_url(url: str) -> str:
    """The URL with its first host only: what a single-host client (aio-pika, FastStream) parses."""
    match = _URL.match(url)
    if match is None:
        raise ValueError("an AMQP URL looks like amqp://user:password@host:port/vhost")
    userinfo, at, hosts = match["netloc"].rpartition("@")
    return f"{match['scheme']}{userinfo}{at}{hosts.split(',')[0].strip()}{match['rest']}"


class FailoverConnection(RobustConnection):
    """aio-pika's robust connection over several hosts (``HOSTS``, set by ``connection_class``)."""

    HOSTS: ClassVar[tuple[tuple[str, int | None], ...]] = ()
    _next = 0

    async def _RobustConnection__connect_transport(self) -> None:
        """Overrides the one step aio-pika's RobustConnection runs for every connection attempt
        (a name-mangled private method: checked against aio-pika 10.2 by
        tests/unit/test_failover.py): the same step, host after host."""
        connect = super()._RobustConnection__connect_transport  # type: ignore[misc]
        base, failure = self.url, None
        for step in range(len(self.HOSTS)):
            index = (self._next + step) % len(self.HOSTS)
            host, port = self.HOSTS[index]
            self.url = base.with_host(host).with_port(port)
            try:
                await connect()
            except CONNECTION_EXCEPTIONS as exc:
                failure = exc
                continue
            self._next = (index + 1) % len(self.HOSTS)  # after a drop, try another node first
            return
        self.url = base
        assert failure is not None
        raise failure


async def connect(url: str, **options: Any) -> AbstractConnection:
    """A plain (not robust) aio-pika connection to the first host of ``url`` that accepts it:
    for the CLI's one-shot commands."""
    failure: BaseException | None = None
    for host, port in amqp_hosts(url):
        one = URL(first_url(url)).with_host(host).with_port(port)
        try:
            connection: AbstractConnection = await aio_pika.connect(one, **options)
            return connection
        except CONNECTION_EXCEPTIONS as exc:
            failure = exc
    assert failure is not None
    raise failure


class FailoverBroker(RabbitBroker):
    """FastStream's RabbitBroker whose robust connection is ``connection_class``: FastStream
    hands its connection arguments to aio-pika's ``connect_robust``, which builds the
    connection from that class."""

    def __init__(self, *args: Any, connection_class: type[RobustConnection], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connection_kwargs["connection_class"] = connection_class


def connection_class(url: str) -> type[RobustConnection] | None:
    """A connection class for a URL naming several hosts; ``None`` for a single host."""
    hosts = amqp_hosts(url)
    if len(hosts) == 1:
        return None
    attributes: dict[str, Any] = {"HOSTS": tuple(hosts)}
    return type("FailoverConnection", (FailoverConnection,), attributes)
