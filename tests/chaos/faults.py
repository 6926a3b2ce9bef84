"""Service faults with the services' own stop and start commands, always restored."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

from tests.services import DEFAULTS, START, answers

PG_VERSION = os.listdir("/etc/postgresql")[0] if os.path.isdir("/etc/postgresql") else "15"


def _sh(command: str) -> None:
    subprocess.run(command, shell=True, check=False, capture_output=True, timeout=120)


def _wait(url: str, up: bool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while answers(url, timeout=1) != up:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not {'come up' if up else 'go down'} in {timeout} s")
        time.sleep(0.2)


@contextlib.contextmanager
def _outage(stop: str, start: str, url: str, ready: str = "sleep 0") -> Iterator[None]:
    """Stops a service with its own command, and always starts it again; ``ready`` runs once
    its port answers again (for what the service still needs after that)."""
    _sh(stop)
    try:
        _wait(url, up=False)
        yield
    finally:
        _sh(start)
        _wait(url, up=True, timeout=120)
        _sh(ready)


def postgres_down() -> contextlib.AbstractContextManager[None]:
    stop = f"pg_ctlcluster --skip-systemctl-redirect {PG_VERSION} main stop -m fast"
    return _outage(stop, START["postgres"], DEFAULTS["postgres"])


def rabbitmq_down() -> contextlib.AbstractContextManager[None]:
    # the port opens a moment before the queues are back
    return _outage("rabbitmqctl stop_app", "rabbitmqctl start_app", DEFAULTS["rabbitmq"], "sleep 1")


def rabbitmq_killed() -> contextlib.AbstractContextManager[None]:
    """SIGKILL to RabbitMQ's Erlang VM (no clean shutdown), then ``rabbitmq-server -detached``
    (after epmd lets go of the dead node's name): durable queues recover from their logs."""
    kill, start = "pkill -KILL -f 'beam.smp.*rabbit'", f"sleep 1; {START['rabbitmq']}"
    ready = "rabbitmqctl await_startup --timeout 120; sleep 1"
    return _outage(kill, start, DEFAULTS["rabbitmq"], ready)


def redis_down() -> contextlib.AbstractContextManager[None]:
    return _outage("redis-cli -p 6379 shutdown nosave", START["redis"], DEFAULTS["redis"])


def local_services() -> bool:
    """Service faults use local commands: only when every URL points at this machine's services."""
    return not any(
        os.environ.get(v)
        for v in ("JOBTRAIL_POSTGRES_URL", "JOBTRAIL_AMQP_URL", "JOBTRAIL_REDIS_URL")
    ) and os.path.isdir("/etc/postgresql")


@contextlib.contextmanager
def private_redis(maxmemory: str, policy: str = "allkeys-lru") -> Iterator[str]:
    """A Redis of this test's own on a free port, with a memory limit; killed afterwards. (The
    shared Redis is never reconfigured.)"""
    from tests.processes import free_port

    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            maxmemory,
            "--maxmemory-policy",
            policy,
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait(url, up=True, timeout=10)
        yield url
    finally:
        process.kill()
        process.wait(10)
