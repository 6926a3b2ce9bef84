"""The services run end to end with least privilege on all three stores, and no more.

Each service process gets its own RabbitMQ user whose permissions are read from the committed
``compose/rabbitmq/definitions.json`` (the patterns for this test's topology prefix), the Redis
ACL rules of shared/access.py (keys under this test's prefix only), and the PostgreSQL role
``jobtrail up`` would create (services/cli/roles.py). One job then runs end to end; the same
credentials are refused what their service does not need. Every user and role made here has a
unique name and is removed at the end; the shared servers are not reconfigured.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import psycopg
import pytest
import redis
from aiormq.exceptions import ChannelAccessRefused
from psycopg.rows import dict_row

from contracts.names import Topology
from services.cli.roles import ensure_role, with_role
from shared import access
from shared.domain import Status
from shared.eventstore import JobStore
from shared.jobtypes import registry
from shared.keys import create_table
from shared.messaging import Routes, declare_topology, make_broker
from shared.settings import BusSettings, StoreSettings
from tests.api import issue_key
from tests.e2e.helpers import settle
from tests.processes import Service, System, free_port, system_env
from tests.services import delete_topology, fresh_database

SERVICES = {"projector": "projector", "scheduler": "scheduler", "worker": "worker-a"}
SERVICES["submitter"] = "submitter"


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {args[0]}: {done.stderr or done.stdout}"
    return done.stdout


def committed_permissions(prefix: str) -> dict[str, dict[str, str]]:
    """The committed definitions' patterns per service, rewritten for ``prefix``."""
    definitions = json.loads(access.DEFINITIONS.read_text())
    ours = re.escape(Topology(prefix).prefix) + r"\."
    by_user = {p["user"]: p for p in definitions["permissions"]}
    return {
        service: {
            kind: by_user[access.user_name(service)][kind].replace(r"jobtrail\.", ours)
            for kind in ("configure", "write", "read")
        }
        for service in SERVICES
    }


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password)}@{host}"))


@dataclass
class Deployment:
    prefix: str
    amqp: dict[str, str] = field(default_factory=dict)  # service -> URL with its user
    redis_url: str = ""
    postgres_url: str = ""
    owner_url: str = ""


@pytest.fixture(scope="module")
def deployment(postgres_server: str, amqp_url: str, redis_url: str) -> Iterator[Deployment]:
    tag = uuid.uuid4().hex[:8]
    prefix = f"jt-lp-{tag}"
    names = {service: f"jt_lp_{tag}_{service}" for service in SERVICES}
    passwords = {service: secrets.token_hex(16) for service in SERVICES}
    acl_user, acl_password = f"jt_lp_{tag}", secrets.token_hex(16)
    admin_redis = redis.Redis.from_url(redis_url)
    with fresh_database(postgres_server, "lp") as owner_url:
        role = f"jt_lp_{tag}"
        try:
            # PostgreSQL: what `jobtrail db init` and `jobtrail up` do, as the owner
            JobStore(StoreSettings(postgres_url=owner_url)).close()
            with psycopg.connect(owner_url, autocommit=True, row_factory=dict_row) as owner:
                create_table(owner)
                pg_password = ensure_role(owner, role, None)
            # RabbitMQ: the topology first (the compose definitions' job), then the users
            bus = BusSettings(amqp_url=amqp_url, topology_prefix=prefix)

            async def declare() -> None:
                broker = make_broker(bus)
                await broker.connect()
                try:
                    await declare_topology(
                        broker, Routes.from_settings(bus), registry.declared_queues(bus.queues)
                    )
                finally:
                    await broker.stop()

            asyncio.run(declare())
            patterns = committed_permissions(prefix)
            for service, user in names.items():
                rabbitmqctl("add_user", user, passwords[service])
                p = patterns[service]
                rabbitmqctl(
                    "set_permissions", "-p", "/", user, p["configure"], p["write"], p["read"]
                )
            # Redis: an ACL user on this prefix's keys
            admin_redis.execute_command(
                "ACL", "SETUSER", acl_user, *access.redis_acl(prefix, f">{acl_password}").split()
            )
            yield Deployment(
                prefix,
                {s: with_user(amqp_url, names[s], passwords[s]) for s in SERVICES},
                with_user(redis_url, acl_user, acl_password),
                with_role(owner_url, role, pg_password),
                owner_url,
            )
        finally:
            for user in names.values():
                subprocess.run(["rabbitmqctl", "-q", "delete_user", user], timeout=60, check=False)
            admin_redis.execute_command("ACL", "DELUSER", acl_user)
            admin_redis.close()
            delete_topology(amqp_url, prefix)
            with psycopg.connect(owner_url, autocommit=True) as owner:
                owner.execute(f'DROP OWNED BY "{role}"')
                owner.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_one_job_runs_end_to_end_with_least_privilege(
    deployment: Deployment, tmp_path: Path
) -> None:
    port = free_port()
    base = system_env(deployment.postgres_url, "", deployment.redis_url, deployment.prefix, port)
    base["JOBTRAIL_POSTGRES_CREATE_SCHEMA"] = "false"
    base["JOBTRAIL_POSTGRES_POOL_SIZE"] = "2"  # the shared test server has few connections
    system = System(base, tmp_path, port, api_key=issue_key(deployment.owner_url))
    for service, name in SERVICES.items():
        env = base | {"JOBTRAIL_AMQP_URL": deployment.amqp[service]}
        system.services[name] = Service(name, env, tmp_path).start()
    checker = deployment.owner_url + "?application_name=jt-lp-checker"
    store = JobStore(StoreSettings(postgres_url=checker))
    try:
        system.wait_ready()
        ids = []
        with system.client(timeout=10) as http:
            # a job that runs at once, and one that fails its first attempt (the worker then
            # publishes AttemptFailed, the scheduler schedules it again)
            for job in (
                {"type": "cpu.hash", "payload": {"text": "lp"}},
                {"type": "test.flaky", "payload": {"fail_times": 1}},
            ):
                response = http.post("/v1/jobs", json=job)
                assert response.status_code == 202, response.text
                ids.append(uuid.UUID(response.json()["id"]))
        jobs = settle(store, ids, timeout=60)
        assert {job.status for job in jobs.values()} == {Status.COMPLETED}, system.logs()
        assert max(job.version for job in jobs.values()) > 4  # the retry happened
        # nothing was refused on the way (but the projector's CONFIG GET, which it only logs)
        refused = (
            "ACCESS_REFUSED",
            "no permissions",
            "can't run this command",
            "permission denied",
        )
        lines = [line for line in system.logs().splitlines() if "maxmemory-policy" not in line]
        assert not [line for line in lines if any(r in line for r in refused)], system.logs()
        # every service connected as its own user (not guest, not the owner)
        with psycopg.connect(deployment.owner_url) as owner:
            users = owner.execute(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name <> 'jt-lp-checker' AND pid <> pg_backend_pid()"
            ).fetchall()
        assert {u for (u,) in users} == {urlsplit(deployment.postgres_url).username}
    finally:
        store.close()
        system.stop()


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.reject(requeue=True)


async def _consume(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        declared = await channel.get_queue(queue, ensure=False)
        await declared.consume(_ignore, timeout=10)
    finally:
        await connection.close()


async def _publish(url: str, exchange: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(b"{}"), routing_key="job.submit", timeout=10)
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("service", "queue"),
    [
        ("submitter", "work.cpu"),  # the public service cannot take work
        ("worker", "commands.submit"),
        ("projector", "scheduler"),
        ("scheduler", "dlq"),  # dead letters are for operators
    ],
)
def test_a_service_user_cannot_consume_another_services_queue(
    deployment: Deployment, service: str, queue: str
) -> None:
    with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
        asyncio.run(_consume(deployment.amqp[service], f"{deployment.prefix}.{queue}"))


def test_a_service_user_can_consume_its_own_queue(deployment: Deployment) -> None:
    asyncio.run(_consume(deployment.amqp["worker"], f"{deployment.prefix}.work.cpu"))


@pytest.mark.parametrize("service", ["submitter", "worker", "projector", "scheduler"])
def test_no_service_user_may_publish_commands(deployment: Deployment, service: str) -> None:
    with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
        asyncio.run(_publish(deployment.amqp[service], f"{deployment.prefix}.commands"))


def test_the_redis_user_is_confined_to_its_prefix(deployment: Deployment) -> None:
    client: Any = redis.Redis.from_url(deployment.redis_url)
    try:
        client.set(f"{deployment.prefix}:lp-probe", "1", ex=10)
        with pytest.raises(redis.exceptions.NoPermissionError):  # NOPERM
            client.set("not-jobtrail:lp-probe", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):  # NOPERM
            client.execute_command("FLUSHDB")
        with pytest.raises(redis.exceptions.NoPermissionError):  # NOPERM
            client.execute_command("CONFIG", "GET", "requirepass")
    finally:
        client.close()
