"""Service faults with the services' own stop and start commands, always restored."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

from tests.services import START, answers

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
def postgres_down() -> Iterator[None]:
    url = "postgresql://127.0.0.1:5432"
    _sh(f"pg_ctlcluster --skip-systemctl-redirect {PG_VERSION} main stop -m fast")
    try:
        _wait(url, up=False)
        yield
    finally:
        _sh(START["postgres"])
        _wait(url, up=True)


@contextlib.contextmanager
def rabbitmq_down() -> Iterator[None]:
    _sh("rabbitmqctl stop_app")
    try:
        _wait("amqp://127.0.0.1:5672", up=False)
        yield
    finally:
        _sh("rabbitmqctl start_app")
        _wait("amqp://127.0.0.1:5672", up=True)
        time.sleep(1)  # the port opens a moment before queues are back


@contextlib.contextmanager
def rabbitmq_killed() -> Iterator[None]:
    """SIGKILL to RabbitMQ's Erlang VM (no clean shutdown), then ``rabbitmq-server -detached``:
    durable quorum and classic queues recover from their logs."""
    _sh("pkill -KILL -f 'beam.smp.*rabbit'")
    try:
        _wait("amqp://127.0.0.1:5672", up=False)
        yield
    finally:
        if not answers("amqp://127.0.0.1:5672", timeout=1):
            time.sleep(1)  # epmd lets go of the dead node's name
            _sh(START["rabbitmq"])
        _wait("amqp://127.0.0.1:5672", up=True, timeout=120)
        _sh("rabbitmqctl await_startup --timeout 120")
        time.sleep(1)


@contextlib.contextmanager
def redis_down() -> Iterator[None]:
    _sh("redis-cli -p 6379 shutdown nosave")
    try:
        _wait("redis://127.0.0.1:6379", up=False)
        yield
    finally:
        _sh(START["redis"])
        _wait("redis://127.0.0.1:6379", up=True)


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
