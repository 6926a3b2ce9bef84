"""The real services publish what they commit: jobs run to the end with no relay at all
(submitter: Scheduled and Requeued, scheduler: timers and retries, worker: failed attempts),
and a relay started afterwards finds every event marked and publishes none of them again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
import redis

from contracts.names import Topology
from shared.domain import Status
from shared.eventstore import JobStore
from shared.outbox import KINDS
from shared.settings import StoreSettings
from tests.e2e.helpers import assert_legal_history, settle, wait_for
from tests.processes import System, free_port, system_env
from tests.services import forget_prefix, fresh_database

pytestmark = pytest.mark.e2e

QUEUES = ("default", "cpu", "io")


@pytest.fixture(scope="module")
def relayless(
    postgres_server: str, amqp_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[System, JobStore]]:
    """submitter, scheduler and a worker on a database, topology and Redis prefix of their
    own (no other test's relay follows that log), and no projector: no relay runs."""
    prefix = f"jt-norelay-{uuid.uuid4().hex[:6]}"
    with fresh_database(postgres_server, "norelay") as url:
        log_dir: Path = tmp_path_factory.mktemp("norelay")
        port = free_port()
        running = System(system_env(url, amqp_url, redis_url, prefix, port), log_dir, port)
        store = JobStore(StoreSettings(postgres_url=url))
        try:
            running.start(("scheduler", "worker", "submitter"))
            running.wait_ready()
            yield running, store
        finally:
            running.stop()
            store.close()
            print(running.logs())
            forget_prefix(amqp_url, redis_url, prefix)


def waiting_messages(amqp_url: str, prefix: str) -> int:
    """Messages waiting in the work queues and the scheduler's queue."""
    topology = Topology(prefix)

    async def count() -> int:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            names = [topology.work_queue(q) for q in QUEUES] + [topology.scheduler_queue]
            total = 0
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                total += queue.declaration_result.message_count or 0
            return total

    return asyncio.run(count())


def test_jobs_run_to_the_end_with_no_relay_and_the_relay_then_publishes_nothing_again(
    relayless: tuple[System, JobStore], amqp_url: str
) -> None:
    system, store = relayless
    prefix = system.env["JOBTRAIL_TOPOLOGY_PREFIX"]
    with system.client(timeout=30) as http:
        # Given jobs that need every writer's messages: dispatched at submission (submitter),
        # retried after a failed attempt (worker, then the scheduler's timer), and requeued by
        # an operator after failing (submitter, then the scheduler)
        plain = [
            uuid.UUID(http.post("/v1/jobs", json={"type": "noop"}).json()["id"]) for _ in range(5)
        ]
        retried = uuid.UUID(
            http.post("/v1/jobs", json={"type": "test.flaky", "payload": {"fail_times": 1}}).json()[
                "id"
            ]
        )
        once = {"type": "test.flaky", "payload": {"fail_times": 1}, "max_attempts": 1}
        requeued = uuid.UUID(http.post("/v1/jobs", json=once).json()["id"])
        assert settle(store, [requeued], timeout=60)[requeued].status is Status.FAILED
        answer = http.post(f"/v1/jobs/{requeued}/requeue", json={"reason": "try again"})
        assert answer.status_code == 202, answer.text

        # When they run, with no relay anywhere
        final = settle(store, [*plain, retried, requeued], timeout=90)

    # Then every one completed, each attempt once
    assert {job_id: final[job_id].status for job_id in final} == dict.fromkeys(
        final, Status.COMPLETED
    )
    assert final[retried].attempt == 2 and final[requeued].attempt == 2
    for job_id in final:
        assert_legal_history(store, job_id)
    assert store.position("relay") == 0

    # And a relay started now (the worker stopped, so nothing is consumed) skips every event
    # it reads, because each was marked once its writer's publish was confirmed
    system.services["worker"].stop()
    last = store.events_after(0, 1000, list(KINDS))[-1][0]  # the last event to relay
    system.start(("projector",))
    wait_for(lambda: store.position("relay") >= last, 60, "the relay to pass every event")
    assert waiting_messages(amqp_url, prefix) == 0
    client = redis.Redis.from_url(system.env["JOBTRAIL_REDIS_URL"])
    try:
        assert client.zcard(f"{prefix}:relayed") == 0  # the relay removed the marks it passed
    finally:
        client.close()
