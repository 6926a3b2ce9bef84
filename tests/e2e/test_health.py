"""Health, readiness and metrics of every service, as real processes; readiness turns 503 with
the reason when a service stops making progress for real, and 200 again once it recovers.

Each stall is real: a handler holding a worker's only slot, a job lock that blocks the
scheduler leader's sweep, a blackholed link between the projector and RabbitMQ (the relay) or
Redis (the projection), through tests/chaos/proxy.py. The shared servers are never touched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.names import Topology
from shared.eventstore.locks import job_key
from shared.messaging import Routes, declare_topology, make_broker
from shared.postgres import connect
from shared.settings import BusSettings, StoreSettings
from tests.chaos.proxy import Proxy
from tests.e2e.helpers import wait_for
from tests.processes import System, free_port, system_env
from tests.services import forget_prefix, fresh_database

pytestmark = pytest.mark.e2e

FAST = {"JOBTRAIL_HEALTH_CHECK_S": "0.3"}


def readiness(url: str) -> tuple[int, dict[str, Any]]:
    try:
        response = httpx.get(f"{url}/readyz", timeout=3)
    except httpx.HTTPError as exc:
        return 0, {"error": repr(exc)}
    return response.status_code, response.json()


def wait_not_ready(url: str, check: str, words: str, timeout: float = 30) -> str:
    """Waits for a 503 whose ``check`` names ``words``; returns the reason."""

    def stalled() -> str | None:
        status, body = readiness(url)
        reason = str(body.get("checks", {}).get(check, ""))
        return reason if status == 503 and words in reason else None

    return wait_for(stalled, timeout, f"{check}: {words}")


def wait_ready(url: str, timeout: float = 60) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, body = readiness(url)
        return body if status == 200 else None

    return wait_for(ready, timeout, f"{url}/readyz 200")


def sample(url: str, name: str, **labels: str) -> float | None:
    """A sample of the service's /metrics (None when absent)."""
    text = httpx.get(f"{url}/metrics", timeout=3).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and labels.items() <= found.labels.items():
                return float(found.value)
    return None


@pytest.fixture
def isolated(
    postgres_server: str, amqp_url: str, redis_url: str, tmp_path: Path
) -> Iterator[System]:
    """A system of its own (database, topology, Redis prefix); the test starts its services."""
    prefix = f"jt-health-{uuid.uuid4().hex[:6]}"
    with fresh_database(postgres_server, "health") as url:
        port = free_port()
        running = System(system_env(url, amqp_url, redis_url, prefix, port) | FAST, tmp_path, port)
        try:
            yield running
        finally:
            running.stop()
            print(running.logs())
            forget_prefix(amqp_url, redis_url, prefix)


@contextmanager
def proxied(url: str) -> Iterator[tuple[Proxy, str]]:
    """A fault proxy in front of ``url``'s server, and the URL that goes through it."""
    parts = urlsplit(url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 0).start()
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    through = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    try:
        yield proxy, through
    finally:
        proxy.heal()
        proxy.stop()


def submit(system: System, job: dict[str, Any]) -> str:
    with system.client() as http:
        response = http.post("/v1/jobs", json=job)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def status_of(system: System, job_id: str) -> str:
    with system.client() as http:
        return str(http.get(f"/v1/jobs/{job_id}").json()["status"])


def test_every_service_answers_healthz_readyz_and_metrics(system: System) -> None:
    urls = {name: service.health_url() for name, service in system.services.items()}
    assert len(set(urls.values())) == len(urls)  # each process its own port
    expected = {
        "projector": "jobtrail_lag_events",
        "scheduler": "jobtrail_scheduler_sweep_age_seconds",
        "worker-a": "jobtrail_queue_messages",
        "worker-b": "jobtrail_queue_messages",
        "submitter": "jobtrail_store_commands_total",
    }
    for name, url in urls.items():
        assert httpx.get(f"{url}/healthz", timeout=3).json() == {"status": "ok"}
        body = wait_ready(url)
        assert body["status"] == "ok" and set(body["checks"].values()) == {"ok"}
        headers = system.headers if name == "submitter" else {}
        metrics = httpx.get(f"{url}/metrics", headers=headers, timeout=3)
        assert metrics.status_code == 200
        assert expected[name] in metrics.text, name
    checks = {name: set(wait_ready(url)["checks"]) for name, url in urls.items()}
    assert checks["worker-a"] == {"started", "consuming"}
    assert checks["scheduler"] == {"started", "sweeps"}
    assert checks["projector"] == {"started", "relay", "projection"}


def test_a_worker_busy_with_a_long_job_while_jobs_wait_stays_ready(isolated: System) -> None:
    # Given a worker of the io queue with one slot and a 1.5 s stall bound
    isolated.start(("submitter",))
    isolated.start(
        ("worker",),
        {
            "JOBTRAIL_WORKER_CONCURRENCY": "1",
            "JOBTRAIL_WORKER_PREFETCH_MULTIPLIER": "1",
            "JOBTRAIL_WORKER_QUEUES": "io",
            "JOBTRAIL_HEALTH_WORKER_STALL_S": "1.5",
        },
    )
    isolated.wait_ready()
    url = isolated.services["worker"].health_url()
    wait_ready(url)

    # When a long job holds that slot and another waits in the queue, past the bound
    long = submit(isolated, {"type": "io.sleep", "payload": {"seconds": 600, "steps": 1000}})
    wait_for(lambda: status_of(isolated, long) == "RUNNING" or None, 30, "the long job runs")
    short = submit(isolated, {"type": "io.sleep", "payload": {"seconds": 0.1, "steps": 1}})
    wait_for(
        lambda: sample(url, "jobtrail_queue_messages", queue=queue_of(isolated, "io")) == 1,
        30,
        "the short job waiting in the queue",
    )

    # Then the worker stays ready: busy is not stalled (an orchestrator reading /readyz as
    # health would otherwise restart it and abandon its attempts); each attempt ends within
    # its timeout_s
    deadline = time.monotonic() + 4.5  # three times the bound
    while time.monotonic() < deadline:
        status, body = readiness(url)
        assert status == 200, body
        time.sleep(0.3)

    # And once the slot is free (the long job cancelled), the waiting job runs
    with isolated.client() as http:
        assert http.post(f"/v1/jobs/{long}/cancel").status_code == 202
    wait_for(lambda: status_of(isolated, short) == "COMPLETED" or None, 30, "the short job")
    wait_ready(url)


def queue_of(system: System, queue: str) -> str:
    """The RabbitMQ name of the system's work queue ``queue``."""
    return Topology(system.env["JOBTRAIL_TOPOLOGY_PREFIX"]).work_queue(queue)


def redeclare(amqp_url: str, prefix: str, queue: str) -> None:
    """Deletes a work queue (RabbitMQ cancels its consumers) and declares it again, bound."""

    async def run() -> None:
        bus = BusSettings(amqp_url=amqp_url, topology_prefix=prefix)
        routes = Routes.from_settings(bus)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(routes.work(queue).name)
        broker = make_broker(bus)
        await broker.connect()
        try:
            await declare_topology(broker, routes, [queue])
        finally:
            await broker.stop()

    asyncio.run(run())


def test_a_worker_whose_consumer_the_broker_cancelled_is_not_ready(
    isolated: System, amqp_url: str
) -> None:
    # Given a worker of the io queue
    isolated.start(("submitter",))
    isolated.start(("worker",), {"JOBTRAIL_WORKER_QUEUES": "io"})
    isolated.wait_ready()
    wait_ready(isolated.services["worker"].health_url())

    # When its queue is deleted and declared again: RabbitMQ cancels the worker's consumer
    redeclare(amqp_url, isolated.env["JOBTRAIL_TOPOLOGY_PREFIX"], "io")

    # Then the worker, connected but consuming nothing, is not ready, saying so
    url = isolated.services["worker"].health_url()
    reason = wait_not_ready(url, "consuming", "no consumer on")
    assert reason.endswith(".work.io")

    # And a worker started again consumes, and is ready
    isolated.services["worker"].stop()
    isolated.start(("worker",), {"JOBTRAIL_WORKER_QUEUES": "io"})
    wait_ready(isolated.services["worker"].health_url())


def test_a_scheduler_leader_whose_sweep_is_blocked_is_not_ready(isolated: System) -> None:
    # Given a scheduler whose sweeps may not stall more than 5 ticks of 0.2 s
    isolated.start(("submitter",))
    isolated.start(("scheduler",), {"JOBTRAIL_HEALTH_SWEEP_STALL_TICKS": "5"})
    isolated.wait_ready()
    url = isolated.services["scheduler"].health_url()
    wait_ready(url)

    # When a job due in two seconds is locked by another session (a transaction that holds it)
    run_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    job_id = submit(isolated, {"type": "io.sleep", "payload": {"seconds": 0}, "run_at": run_at})
    settings = StoreSettings(postgres_url=isolated.env["JOBTRAIL_POSTGRES_URL"])
    with connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [job_key(uuid.UUID(job_id))])

        # Then the leader's sweep waits for it, and the scheduler is not ready
        wait_not_ready(url, "sweeps", "no sweep ended for")

        # And once the lock is released, the sweep ends and the scheduler is ready again
        conn.execute("SELECT pg_advisory_unlock(%s)", [job_key(uuid.UUID(job_id))])
    wait_ready(url)
    assert status_of(isolated, job_id) != "PENDING"


def test_a_relay_that_cannot_publish_is_stuck_and_not_ready(
    isolated: System, amqp_url: str
) -> None:
    # Given writers that leave every message to the relay, and a relay behind a fault proxy
    isolated.env["JOBTRAIL_PUBLISH_ON_COMMIT"] = "false"
    with proxied(amqp_url) as (proxy, through):
        isolated.start(("submitter",))
        isolated.start(
            ("projector",),
            {
                "JOBTRAIL_AMQP_URL": through,
                "JOBTRAIL_PUBLISH_TIMEOUT_S": "1",
                "JOBTRAIL_HEALTH_RELAY_STALL_S": "1.5",
            },
        )
        isolated.wait_ready()
        url = isolated.services["projector"].health_url()
        wait_ready(url)

        # When RabbitMQ stops answering it while jobs are submitted
        proxy.blackhole()
        for _ in range(3):
            submit(isolated, {"type": "io.sleep", "payload": {"seconds": 0}})

        # Then the relay is stuck behind the head, and says so
        reason = wait_not_ready(url, "relay", "relay stuck")
        assert "events behind the log head" in reason
        assert (sample(url, "jobtrail_lag_events", follower="relay") or 0) > 0
        assert (sample(url, "jobtrail_lag_seconds", follower="relay") or 0) > 0

        # And once the link is back, it publishes them and is ready again
        proxy.heal()
        body = wait_ready(url, timeout=90)
        assert body["checks"]["relay"] == "ok"
        isolated.stop()  # before the proxy goes


def test_a_projection_that_cannot_write_lags_and_is_not_ready(
    isolated: System, redis_url: str
) -> None:
    # Given a projector whose Redis is behind a fault proxy, with a 1.5 s bound on its lag
    with proxied(redis_url) as (proxy, through):
        isolated.start(("submitter",))
        isolated.start(
            ("projector",),
            {"JOBTRAIL_REDIS_URL": through, "JOBTRAIL_HEALTH_PROJECTION_MAX_LAG_S": "1.5"},
        )
        isolated.wait_ready()
        url = isolated.services["projector"].health_url()
        wait_ready(url)

        # When Redis stops answering it while jobs are submitted
        proxy.blackhole()
        ids = [submit(isolated, {"type": "io.sleep", "payload": {"seconds": 0}}) for _ in range(3)]

        # Then the projection lags past its bound, and the projector says so
        reason = wait_not_ready(url, "projection", "projection lags")
        assert "s behind the log head" in reason
        assert (sample(url, "jobtrail_lag_events", follower="projection") or 0) > 0

        # And once Redis is back, it catches up and is ready again
        proxy.heal()
        wait_ready(url, timeout=60)
        with isolated.client() as http:
            sources = {http.get(f"/v1/jobs/{i}").json()["source"] for i in ids}
        assert sources == {"cache"}
        # the gauge is the monitor's reading (every JOBTRAIL_HEALTH_CHECK_S): it reaches 0
        wait_for(
            lambda: sample(url, "jobtrail_lag_events", follower="projection") == 0,
            10,
            "the projection's lag gauge back at 0",
        )
        wait_for(
            lambda: sample(url, "jobtrail_jobs", type="io.sleep", status="SCHEDULED"),
            30,
            "the job counts",
        )
        isolated.stop()
