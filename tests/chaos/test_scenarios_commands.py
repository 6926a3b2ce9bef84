"""Commands that arrive by message while PostgreSQL is away for longer than every retry budget.

Every service reaches PostgreSQL through the TCP fault proxy, which refuses every connection for
90 s: longer than the 60 s the command subscribers used to retry before dead-lettering, and
longer than four holds (``JOBTRAIL_HOLD_S`` is shrunk to 20 s here, so each held command is
parked at the back of its queue four times; with the quorum queues' delivery limit of 5, a
requeue loop would dead-letter it). SubmitJob messages (with idempotency keys, some published
twice), CancelJob messages and commands that are not JSON are published, confirmed, during the
outage. The checker then finds every job ended, and every dead letter is recorded once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from contracts.messages import CancelJob, CancelJobMessage, SubmitJob, SubmitJobMessage
from shared.dead_letters import recorded
from shared.domain import Job, Status, job_id_for_key
from tests.chaos.harness import Load, Scenario, mixed_jobs, scenario
from tests.chaos.proxy import Proxy

pytestmark = pytest.mark.chaos

OUTAGE_S = 90.0
HOLD_S = 20


def command(body: dict[str, Any], key: str) -> aio_pika.Message:
    message = SubmitJobMessage(
        correlation_id=f"bus-{key}", data=SubmitJob.model_validate(body | {"idempotency_key": key})
    )
    return aio_pika.Message(
        message.model_dump_json().encode(),
        content_type="application/json",
        message_id=uuid.uuid4().hex,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def cancel(job_id: uuid.UUID) -> aio_pika.Message:
    message = CancelJobMessage(correlation_id=f"cancel-{job_id}", data=CancelJob(job_id=job_id))
    return aio_pika.Message(
        message.model_dump_json().encode(),
        content_type="application/json",
        message_id=uuid.uuid4().hex,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def garbage(n: int) -> aio_pika.Message:
    return aio_pika.Message(
        b"\x00not json{" + str(n).encode(),
        content_type="application/json",
        message_id=f"garbage-{n}",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def publish(amqp_url: str, exchange: str, key: str, messages: list[aio_pika.Message]) -> None:
    """Publishes with publisher confirms: each message is the broker's once this returns."""

    async def run() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            target = await channel.get_exchange(exchange)
            for message in messages:
                await target.publish(message, routing_key=key, mandatory=True)

    asyncio.run(run())


def depth(amqp_url: str, queue: str) -> int:
    async def run() -> int:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)

    return asyncio.run(run())


def through_proxy(s: Scenario, port: int) -> None:
    """Restarts every service with its PostgreSQL behind the proxy (the checker's store is not)."""
    parts = urlsplit(s.system.env["JOBTRAIL_POSTGRES_URL"])
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{port}"
    names = tuple(s.system.services)
    s.system.stop()
    s.system.env = s.system.env | {
        "JOBTRAIL_POSTGRES_URL": urlunsplit(parts._replace(netloc=netloc))
    }
    s.system.start(names)
    s.system.wait_ready()


def existing(s: Scenario, ids: list[uuid.UUID]) -> int:
    try:
        return len(s.store.get_many(ids))
    except Exception:
        return 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_postgres_away_longer_than_every_budget_while_commands_arrive(
    postgres_server: str, amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    target = urlsplit(postgres_server)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    name = f"PostgreSQL refused {OUTAGE_S:.0f} s while commands arrive by message (hold {HOLD_S} s)"
    try:
        with scenario(
            name,
            postgres_server,
            amqp_url,
            redis_url,
            tmp_path,
            extra_env={"JOBTRAIL_HOLD_S": str(HOLD_S)},
        ) as s:
            through_proxy(s, proxy.port)
            topology = f"{s.prefix}.commands"
            started = time.monotonic()
            # Given commands that arrive before the outage: 100 jobs, and 20 due in an hour
            before = mixed_jobs(100, seed=11)
            later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            delayed = [{"type": "chaos.work", "payload": {"ms": 5}, "run_at": later}] * 20
            during = mixed_jobs(200, seed=12)
            keys = {f"cmd-{uuid.uuid4().hex}": body for body in before + delayed + during}
            listed = list(keys.items())
            first, waiting, rest = listed[:100], listed[100:120], listed[120:]
            publish(amqp_url, topology, "job.submit", [command(b, k) for k, b in first + waiting])
            waiting_ids = [job_id_for_key(k) for k, _ in waiting]
            deadline = time.monotonic() + 60
            while existing(s, waiting_ids) < len(waiting_ids):
                assert time.monotonic() < deadline, "the delayed jobs were not submitted"
                time.sleep(0.3)

            # When PostgreSQL refuses every connection of every service
            proxy.refuse()
            s.faults += 1
            down = time.monotonic()
            time.sleep(3)
            ready = s.system.client().get("/readyz", timeout=10)
            assert ready.status_code == 503, ready.text  # the outage is real
            # And commands arrive, confirmed by the broker: 200 submits (40 of them twice),
            # 20 cancels of the delayed jobs, 4 commands that are not JSON
            publish(amqp_url, topology, "job.submit", [command(b, k) for k, b in rest])
            publish(amqp_url, topology, "job.submit", [command(b, k) for k, b in rest[:40]])
            publish(amqp_url, topology, "job.cancel", [cancel(j) for j in waiting_ids])
            publish(amqp_url, topology, "job.submit", [garbage(n) for n in range(4)])
            published = time.monotonic() - down
            # And the outage lasts longer than every budget
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
            dead_during = depth(amqp_url, f"{s.prefix}.dlq")
            proxy.heal()
            back = time.monotonic()

            # Then every command takes effect: the first soon, all of them in the end
            rest_ids = [job_id_for_key(k) for k, _ in rest]
            first_effect = all_effect = None
            deadline = back + 60
            while time.monotonic() < deadline:
                count = existing(s, rest_ids)
                if count and first_effect is None:
                    first_effect = time.monotonic() - back
                if count == len(rest_ids):
                    all_effect = time.monotonic() - back
                    break
                time.sleep(0.2)
            load = Load(s.system, [body for _, body in listed])
            load.acked = {key: job_id_for_key(key) for key, _ in listed}
            report = s.check(load, settle_s=120)
            ids = list(load.acked.values())
            histories = {job_id: s.store.history(job_id) for job_id in ids}
            # And each submit made exactly one job, each cancel cancelled its job once
            submitted = [sum(isinstance(e, Job.Submitted) for e in h) for h in histories.values()]
            cancelled = [
                sum(isinstance(e, Job.Cancelled) for e in histories[job_id])
                for job_id in waiting_ids
            ]
            statuses = {j.id: j.status for j in s.store.get_many(waiting_ids)}
            # And nothing was dead-lettered for the outage; each dead letter is recorded once
            dead_after = depth(amqp_url, f"{s.prefix}.dlq")
            letters = [
                row
                for row in recorded(s.store, None, 1000)
                if str(row["queue"]).startswith(s.prefix + ".")
            ]
            parked = sum(
                service.log_path.read_text(errors="replace").count("parked at the back of its")
                for service in s.system.services.values()
            )
            print(
                f"commands: {len(listed)} submits (+40 repeated) and {len(waiting_ids)} cancels; "
                f"published during the outage in {published:.1f} s; outage {OUTAGE_S:.0f} s; "
                f"dead letters in the queue during/after: {dead_during}/{dead_after}; "
                f"recorded: {len(letters)}; first command took effect {first_effect} s after "
                f"PostgreSQL returned, all {all_effect} s; whole scenario "
                f"{time.monotonic() - started:.0f} s; parks: {parked}"
            )
            assert report.clean, "\n".join(report.details)
            assert report.jobs == len(listed)
            assert all_effect is not None, f"{existing(s, rest_ids)} of {len(rest_ids)} submitted"
            assert submitted == [1] * len(ids)
            assert cancelled == [1] * len(waiting_ids)
            assert set(statuses.values()) == {Status.CANCELLED}
            assert parked > 0, "no command was parked: the scenario did not outlast a hold"
            assert dead_during == dead_after == 4
            assert sorted(str(row["message_id"]) for row in letters) == [
                f"garbage-{n}" for n in range(4)
            ]
            assert {row["queue"] for row in letters} == {f"{s.prefix}.commands.submit"}
    finally:
        proxy.stop()
