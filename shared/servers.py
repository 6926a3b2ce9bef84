"""The local servers jobtrail needs (PostgreSQL, RabbitMQ, Redis): one table for every caller.

``jobtrail up/demo/replay`` check them (``check_infrastructure``), the tests find them
(tests/services.py) and ``make services`` starts the ones that are down (scripts/ensure-services.sh
runs ``python -m shared.servers``, which prints one tab-separated line per server: name, URL
variable, default port, start command). Standard library only, so that the script can run it
with the system's Python before any virtualenv exists.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

PORTS = {"postgresql": 5432, "postgres": 5432, "amqp": 5672, "amqps": 5671, "redis": 6379}
"""The port of a URL that names none, by scheme."""


@dataclass(frozen=True)
class Server:
    key: str
    """The short name tests use (``postgres``, ``rabbitmq``, ``redis``)."""
    name: str
    variable: str
    """The environment variable with its URL."""
    url: str
    """Its URL when the variable is not set (the settings' default)."""
    start: str
    """A shell command that starts a local one (DEVELOPERS.md)."""

    def configured_url(self) -> str:
        return os.environ.get(self.variable) or self.url

    @property
    def port(self) -> int:
        return port_of(self.url)


SERVERS = (
    Server(
        "postgres",
        "PostgreSQL",
        "JOBTRAIL_POSTGRES_URL",
        "postgresql://postgres@127.0.0.1:5432/jobtrail",
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start",
    ),
    Server(
        "rabbitmq",
        "RabbitMQ",
        "JOBTRAIL_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/",
        "rabbitmq-server -detached",
    ),
    Server(
        "redis",
        "Redis",
        "JOBTRAIL_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes "
        '--bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis '
        "--logfile /var/log/redis/ci.log",
    ),
)
BY_KEY = {server.key: server for server in SERVERS}
BY_NAME = {server.name: server for server in SERVERS}


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or PORTS.get(parts.scheme, 0)


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when something accepts a TCP connection at the URL's host and port."""
    try:
        host = urlsplit(url).hostname or "127.0.0.1"
        with socket.create_connection((host, port_of(url)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def check_infrastructure(names: tuple[str, ...] = tuple(BY_NAME)) -> list[str]:
    """Names what does not answer, with how to start it; an empty list when all answer."""
    problems = []
    for name in names:
        server = BY_NAME[name]
        url = server.configured_url()
        if not answers(url):
            parts = urlsplit(url)
            problems.append(
                f"{name} does not answer at {parts.hostname}:{port_of(url)}. Start it "
                f"(`{server.start}`), or point {server.variable} at a running one."
            )
    return problems


def main() -> None:
    """One line per server for scripts/ensure-services.sh: name, variable, port, start command."""
    for server in SERVERS:
        sys.stdout.write(f"{server.name}\t{server.variable}\t{server.port}\t{server.start}\n")


if __name__ == "__main__":
    main()
