"""The faults of ../shared/RELIABILITY.md, each under steady load, each ending in the checker.

Scenarios marked ``slow`` run in the full suite (`make chaos`); the rest also run in `make test`.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.domain import Job, Status
from tests.chaos.checker import Report
from tests.chaos.harness import Load, Scenario, mixed_jobs, scenario

pytestmark = pytest.mark.chaos


def assert_clean(s: Scenario, load: Load, settle_s: float = 120) -> Report:
    assert not load.refused, load.refused[:5]
    report = s.check(load, settle_s=settle_s)
    assert report.clean, "\n".join(report.details)
    assert report.jobs == len(load.jobs), f"only {report.jobs} of {len(load.jobs)} acknowledged"
    return report


def test_worker_killed_mid_job(run) -> None:  # type: ignore[no-untyped-def]
    with run("worker SIGKILL mid-job") as s:
        load = Load(s.system, mixed_jobs(300)).start()
        time.sleep(2.5)
        s.worker().signal(signal.SIGKILL)
        s.faults += 1
        time.sleep(2)
        s.worker().start()
        load.wait()
        assert_clean(s, load)
        expired = sum(
            isinstance(e, Job.LeaseExpired) for j in load.acked.values() for e in s.store.history(j)
        )
        assert expired >= 1  # the killed worker's jobs were taken back, and the history says so


def test_worker_stopped_past_its_lease(run) -> None:  # type: ignore[no-untyped-def]
    with run("worker SIGSTOP past lease, SIGCONT") as s:
        # long jobs: still running on their second worker when the first one wakes up
        long = [{"type": "chaos.work", "payload": {"ms": 7000}, "priority": 9}] * 12
        load = Load(s.system, long + mixed_jobs(300)).start()
        time.sleep(2.5)
        s.worker().signal(signal.SIGSTOP)
        s.faults += 1
        time.sleep(6)  # twice the lease
        s.worker().signal(signal.SIGCONT)
        load.wait()
        assert_clean(s, load)
        expired = [
            e
            for j in load.acked.values()
            for e in s.store.history(j)
            if isinstance(e, Job.LeaseExpired)
        ]
        assert expired, "the stopped worker's leases should have expired"


def dlq_depth(amqp_url: str, prefix: str) -> int:
    import asyncio

    import aio_pika

    async def depth() -> int:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{prefix}.dlq", passive=True)
            return int(queue.declaration_result.message_count or 0)

    return asyncio.run(depth())


def publish_raw(amqp_url: str, exchange: str, key: str, body: bytes) -> None:
    import asyncio

    import aio_pika

    async def publish() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            target = await channel.get_exchange(exchange)
            await target.publish(
                aio_pika.Message(body, delivery_mode=2), routing_key=key, mandatory=True
            )

    asyncio.run(publish())


def test_poison_jobs_and_undecodable_messages(run, amqp_url: str) -> None:  # type: ignore[no-untyped-def]
    with run("poison job + undecodable message") as s:
        poison = [
            {"type": "chaos.work", "payload": {"fail_times": 99, "ms": 5}, "max_attempts": 3}
        ] * 20
        load = Load(s.system, poison + mixed_jobs(200)).start()
        before = dlq_depth(amqp_url, s.prefix)
        deadline = time.monotonic() + 30
        while not load.acked:
            assert time.monotonic() < deadline, "no submission acknowledged within 30 s"
            time.sleep(0.1)
        named = next(iter(load.acked.values()))
        broken = json.dumps({"correlation_id": "x", "data": {"job_id": str(named)}}).encode()
        for key in ("job.scheduled.default", "job.submitted"):
            publish_raw(amqp_url, f"{s.prefix}.events", key, b"\x00not json{")
            publish_raw(amqp_url, f"{s.prefix}.events", key, broken)
        publish_raw(amqp_url, f"{s.prefix}.commands", "job.submit", broken)
        s.faults += 5
        # Then the five land in the dead-letter queue at once, with no retry loop
        deadline = time.monotonic() + 10
        while dlq_depth(amqp_url, s.prefix) < before + 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dlq_depth(amqp_url, s.prefix) == before + 5
        # And each is recorded, against the job its body names, by the consumer that rejected it
        letters = s.system.client().get("/v1/dead-letters", timeout=10).json()
        assert sorted(letter["queue"].removeprefix(s.prefix) for letter in letters) == [
            ".commands.submit",
            ".scheduler",
            ".scheduler",
            ".work.default",
            ".work.default",
        ]
        mine = (
            s.system.client()
            .get("/v1/dead-letters", params={"job_id": str(named)}, timeout=10)
            .json()
        )
        assert len(mine) == 3 and {letter["reason"] for letter in mine} == {"invalid"}
        # And the submitter counted the one it rejected
        metrics = s.system.client().get("/metrics", timeout=10).text
        labels = f'queue="{s.prefix}.commands.submit",reason="invalid"'
        sample = f"jobtrail_dead_letters_total{{{labels}}} 1.0"
        assert sample in metrics, metrics[-2000:]
        load.wait()
        assert_clean(s, load)
        # And every poison job FAILED after exactly its three attempts, with its error
        histories = [s.store.history(job_id) for job_id in load.acked.values()]
        poisoned = [h for h in histories if h[0].payload.get("fail_times") == 99]
        assert len(poisoned) == 20 + 10  # 20 here, 10 in mixed_jobs(200)
        for history in poisoned:
            assert isinstance(history[-1], Job.Failed), history[-1]
            assert sum(isinstance(e, Job.Started) for e in history) == 3
            assert "planned failure" in history[-1].error_message


def test_redis_flushed_then_down(run, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    import redis as redis_client

    from tests.chaos.faults import local_services, redis_down

    if not local_services():
        pytest.skip("needs the local Redis to stop and start")
    with run("Redis FLUSHDB, then Redis down") as s:
        load = Load(s.system, mixed_jobs(300)).start()
        time.sleep(2)
        redis_client.Redis.from_url(redis_url).flushdb()
        s.faults += 1
        time.sleep(2)
        with redis_down():
            s.faults += 1
            time.sleep(3)
            # status reads still answer, from the log
            some = next(iter(load.acked.values()))
            answer = s.system.client().get(f"/v1/jobs/{some}", timeout=10)
            assert answer.status_code == 200 and answer.json()["source"] == "log"
        load.wait()
        assert_clean(s, load)


def test_redis_with_a_tiny_maxmemory_evicting_under_load(
    postgres_server: str, amqp_url: str, tmp_path: Path
) -> None:
    import redis as redis_client

    from tests.chaos.faults import private_redis

    with (
        private_redis("2mb") as url,
        scenario(
            "Redis maxmemory 2mb allkeys-lru (private server)",
            postgres_server,
            amqp_url,
            url,
            tmp_path,
        ) as s,
    ):
        s.evictable = True  # a missing hash is fine; one that is there must equal the fold
        s.faults += 1
        load = Load(s.system, mixed_jobs(900), rate_per_s=90).start()
        load.wait()
        # status reads answer for every job, from the log where Redis evicted the hash
        sources = {"cache": 0, "log": 0}
        with s.system.client(timeout=10) as http:
            for job_id in list(load.acked.values())[::9]:
                answer = http.get(f"/v1/jobs/{job_id}")
                assert answer.status_code == 200, answer.text
                sources[answer.json()["source"]] += 1
        report = assert_clean(s, load)
        evicted_keys = int(redis_client.Redis.from_url(url).info("stats")["evicted_keys"])
        print(
            f"evicted keys: {evicted_keys}; hashes missing at the check: {report.evicted}; "
            f"sampled reads: {sources}"
        )
        assert evicted_keys > 0, "the scenario did not make Redis evict anything"
        assert report.evicted > 0, "no job hash was evicted: the fallback to the log went untested"


def purge_work_queues(amqp_url: str, prefix: str) -> int:
    import asyncio

    import aio_pika

    async def purge() -> int:
        connection = await aio_pika.connect(amqp_url)
        purged = 0
        async with connection:
            channel = await connection.channel()
            for name in ("default", "cpu", "io"):
                queue = await channel.get_queue(f"{prefix}.work.{name}")
                purged += (await queue.purge()).message_count or 0
        return purged

    return asyncio.run(purge())


def test_lost_work_messages_are_sent_again(run, amqp_url: str) -> None:  # type: ignore[no-untyped-def]
    from tests.processes import Service

    with run(
        "work messages lost (work queues purged before any worker)",
        services=("projector", "scheduler", "submitter"),
        extra_env={"JOBTRAIL_SCHEDULER_DISPATCH_DEADLINE_S": "3"},
    ) as s:
        # Given jobs scheduled and relayed to their work queues while no worker runs
        load = Load(s.system, mixed_jobs(200), rate_per_s=100).start()
        load.wait()
        ids = list(load.acked.values())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            all(j.status == Status.SCHEDULED for j in s.store.get_many(ids))
            and s.store.position("relay") >= s.store.max_notification_id()
        ):
            time.sleep(0.3)
        # When the broker loses every work message
        assert purge_work_queues(amqp_url, s.prefix) >= len(ids)
        s.faults += 1
        for name in ("worker-a", "worker-b"):
            s.system.services[name] = Service(name, s.system.env, s.system.log_dir).start()
        # Then the scheduler sends them again and every job still reaches its final state
        assert_clean(s, load)
        assert "sending its work message again" in s.system.services["scheduler"].tail(400)


def test_projector_leader_killed_with_a_standby(run) -> None:  # type: ignore[no-untyped-def]
    services = ("projector-a", "projector-b", "scheduler", "worker-a", "worker-b", "submitter")
    with run("projector leader SIGKILL, standby takes over", services=services) as s:
        load = Load(s.system, mixed_jobs(300)).start()
        time.sleep(2)
        leader = next(
            name
            for name in ("projector-a", "projector-b")
            if "relay: this process is the leader" in s.system.services[name].tail(200)
        )
        s.system.services[leader].signal(signal.SIGKILL)
        s.faults += 1
        load.wait()
        assert_clean(s, load)
        standby = "projector-b" if leader == "projector-a" else "projector-a"
        assert "relay: this process is the leader" in s.system.services[standby].tail(200)


def test_relay_killed_between_publish_and_position_save(run) -> None:  # type: ignore[no-untyped-def]
    with run("relay SIGKILL (republishes), 3 times") as s:
        load = Load(s.system, mixed_jobs(300)).start()
        for _ in range(3):
            time.sleep(1.5)
            s.system.services["projector"].signal(signal.SIGKILL)
            s.faults += 1
            time.sleep(0.5)
            s.system.services["projector"].start()
        load.wait()
        assert_clean(s, load)


def test_submitter_killed_clients_retry_with_their_key(run) -> None:  # type: ignore[no-untyped-def]
    with run("submitter SIGKILL, clients retry same key") as s:
        load = Load(s.system, mixed_jobs(300), rate_per_s=100).start(threads=4)
        for _ in range(2):
            time.sleep(1.5)
            s.system.services["submitter"].signal(signal.SIGKILL)
            s.faults += 1
            time.sleep(0.5)
            s.system.services["submitter"].start()
        load.wait()
        assert_clean(s, load)
        for job_id in load.acked.values():
            assert sum(isinstance(e, Job.Submitted) for e in s.store.history(job_id)) == 1


def outage(run, name: str, down) -> Load:  # type: ignore[no-untyped-def]
    """Steady load, a service stopped for 5 s and started again, then the checker."""
    from tests.chaos.faults import local_services

    if not local_services():
        pytest.skip("needs local services this machine can stop and start")
    with run(name) as s:
        load = Load(s.system, mixed_jobs(300)).start()
        time.sleep(2)
        with down():
            s.faults += 1
            time.sleep(5)
        load.wait()
        assert_clean(s, load, settle_s=180)
        return load


@pytest.mark.slow
def test_rabbitmq_stopped_and_started_under_load(run) -> None:  # type: ignore[no-untyped-def]
    from tests.chaos.faults import rabbitmq_down

    outage(run, "RabbitMQ stop_app/start_app under load", rabbitmq_down)


@pytest.mark.slow
def test_rabbitmq_killed_and_restarted_under_load(run) -> None:  # type: ignore[no-untyped-def]
    from tests.chaos.faults import rabbitmq_killed

    outage(run, "RabbitMQ SIGKILL, then restarted, under load", rabbitmq_killed)


def test_postgres_stopped_and_started_under_load(run) -> None:  # type: ignore[no-untyped-def]
    from tests.chaos.faults import postgres_down

    load = outage(run, "PostgreSQL stop/start under load (503 + Retry-After)", postgres_down)
    assert load.unavailable > 0  # submissions during the outage were refused with 503


def proxied_worker(s: Scenario, proxy_port: int, kind: str) -> None:
    """Starts worker-a with its RabbitMQ or PostgreSQL link through the fault proxy."""
    from urllib.parse import urlsplit, urlunsplit

    from tests.processes import Service

    env = dict(s.system.env)
    if kind == "amqp":
        env["JOBTRAIL_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{proxy_port}/?heartbeat=3"
    else:
        parts = urlsplit(env["JOBTRAIL_POSTGRES_URL"])
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy_port}"
        env["JOBTRAIL_POSTGRES_URL"] = urlunsplit(parts._replace(netloc=netloc))
    s.system.services["worker-a"] = Service("worker-a", env, s.system.log_dir).start()


@pytest.mark.slow
@pytest.mark.parametrize("link", ["amqp", "postgres"])
def test_worker_link_blackholed_then_reset(
    run, link: str, amqp_url: str, postgres_server: str
) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import urlsplit

    from tests.chaos.proxy import Proxy

    target = urlsplit(amqp_url if link == "amqp" else postgres_server)
    proxy = Proxy(
        target.hostname or "127.0.0.1", target.port or (5672 if link == "amqp" else 5432)
    ).start()
    services = ("projector", "scheduler", "worker-b", "submitter")
    try:
        with run(f"worker-{link} link blackholed 10 s, then reset", services=services) as s:
            proxied_worker(s, proxy.port, link)
            time.sleep(3)
            load = Load(s.system, mixed_jobs(1200), rate_per_s=60).start()
            time.sleep(2.5)
            proxy.blackhole()
            s.faults += 1
            time.sleep(10)
            proxy.heal()
            time.sleep(1)
            proxy.reset()
            healed = datetime.now(UTC)
            s.faults += 1
            load.wait()
            assert_clean(s, load, settle_s=180)
            # And worker-a came back: it claimed jobs after its link was reset
            later = [
                e
                for j in load.acked.values()
                for e in s.store.history(j)
                if isinstance(e, Job.Started)
                and e.worker_id.startswith("worker-a")
                and e.timestamp > healed
            ]
            assert later, f"worker-a did not work after the fault:\n{s.worker().tail()}"
    finally:
        proxy.stop()


@pytest.mark.slow
@pytest.mark.parametrize("link", ["postgres", "amqp"])
def test_worker_link_with_latency(run, link: str, amqp_url: str, postgres_server: str) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import urlsplit

    from tests.chaos.proxy import Proxy

    target = urlsplit(postgres_server if link == "postgres" else amqp_url)
    port = target.port or (5432 if link == "postgres" else 5672)
    proxy = Proxy(target.hostname or "127.0.0.1", port).start()
    services = ("projector", "scheduler", "worker-b", "submitter")
    try:
        name = f"worker-{link} link +100 ms each way under load (slow)"
        with run(name, services=services) as s:
            proxy.latency_s = 0.1
            s.faults += 1
            proxied_worker(s, proxy.port, link)
            time.sleep(3)
            load = Load(s.system, mixed_jobs(300)).start()
            load.wait()
            assert_clean(s, load, settle_s=180)
            # And the slowed worker still did its share
            slowed = [
                e
                for j in load.acked.values()
                for e in s.store.history(j)
                if isinstance(e, Job.Started) and e.worker_id.startswith("worker-a")
            ]
            assert slowed, f"worker-a ran nothing:\n{s.worker().tail()}"
            print(f"jobs started by the slowed worker: {len(slowed)}")
    finally:
        proxy.stop()
