"""A full group-commit queue refuses at once instead of growing: StoreOverloadedError, 503 +
Retry-After at the API (a batch refused whole), held and retried by a bus consumer; nothing of a
refused command is written, and what was queued commits once the queue moves again.

The queue is made to fill for real: another connection holds the events table's lock (the lock
every append takes), the store runs one transaction at a time, so the first command waits inside
PostgreSQL and the next ones wait in the queue, bounded at ``MAX_WAITING``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from services.submitter import subscribers
from shared.domain import Job, job_id_for_key
from shared.eventstore import AsyncJobStore, Command, JobStore, StoreOverloadedError
from shared.messaging import Routes
from shared.service import Service
from shared.settings import BusSettings, RedisSettings, StoreSettings
from tests.api import served
from tests.integration.test_commands_outage import depth, eventually, publish, submit_message
from tests.jobs import CAUSE
from tests.services import delete_topology

MAX_WAITING = 3


def new_job(job_id: uuid.UUID) -> Command:
    return lambda _: Job.submit(CAUSE, job_type="cpu.hash", payload={"text": "x"}, job_id=job_id)


@pytest.fixture
def overload_settings(store_settings: StoreSettings) -> StoreSettings:
    """One transaction at a time, at most MAX_WAITING commands queued, and a lock wait longer
    than any hold of the table lock here."""
    return store_settings.model_copy(
        update={
            "store_max_inflight_batches": 1,
            "store_max_waiting": MAX_WAITING,
            "postgres_lock_timeout_s": 60,
        }
    )


@contextmanager
def table_locked(postgres_url: str, store: JobStore) -> Iterator[psycopg.Connection[Any]]:
    """Holds the events table's lock from another connection until the block ends."""
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                sql.Identifier(store.settings.postgres_schema, store.events_table)
            )
        )
        try:
            yield conn
        finally:
            conn.rollback()


async def waiting_for_the_lock(postgres_url: str, store: JobStore) -> None:
    """Returns once a transaction of the store waits for the table lock in PostgreSQL."""
    table = f"{store.settings.postgres_schema}.{store.events_table}"

    async def blocked() -> bool:
        def count() -> int:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
                    [table],
                ).fetchone()
                return int(row[0]) if row else 0

        return await asyncio.to_thread(count) > 0

    await eventually(blocked, 10, "a group commit waiting for the table lock")


async def fill(
    postgres_url: str, store: AsyncJobStore
) -> tuple[asyncio.Task[Job], list[asyncio.Task[Job]]]:
    """One command inside a blocked transaction, MAX_WAITING more in the queue behind it."""
    first_id = uuid.uuid4()
    first = asyncio.create_task(store.execute(first_id, new_job(first_id)))
    await waiting_for_the_lock(postgres_url, store.store)
    assert store.waiting == 0
    ids = [uuid.uuid4() for _ in range(MAX_WAITING)]
    queued = [asyncio.create_task(store.execute(i, new_job(i))) for i in ids]
    await asyncio.sleep(0.1)
    assert store.waiting == MAX_WAITING
    assert not first.done() and not any(t.done() for t in queued)
    return first, queued


def written(store: JobStore, job_ids: list[uuid.UUID]) -> int:
    """Rows of these jobs in the log (read straight from the table)."""
    with psycopg.connect(store.settings.postgres_url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE originator_id = ANY(%s)").format(
                sql.Identifier(store.settings.postgres_schema, store.events_table)
            ),
            [job_ids],
        ).fetchone()
        return int(row[0]) if row else 0


async def test_a_full_queue_refuses_at_once_and_what_was_queued_commits(
    postgres_url: str, overload_settings: StoreSettings
) -> None:
    async with AsyncJobStore(JobStore(overload_settings)) as store:
        with table_locked(postgres_url, store.store):
            # Given a transaction blocked in PostgreSQL and a full queue behind it
            first, queued = await fill(postgres_url, store)

            # When one more command comes, and a batch
            refused = uuid.uuid4()
            with pytest.raises(StoreOverloadedError) as single:
                await asyncio.wait_for(store.execute(refused, new_job(refused)), 1)
            batch = [uuid.uuid4() for _ in range(2)]
            with pytest.raises(StoreOverloadedError) as many:
                await asyncio.wait_for(store.execute_many([(i, new_job(i)) for i in batch]), 1)

            # Then both are refused at once (no wait for the lock), asking for a retry in 1 s
            assert single.value.retry_after_s == many.value.retry_after_s == 1
            # And the queue did not grow
            assert store.waiting == MAX_WAITING
            assert store.store.stats.overloaded == 2

        # When the lock is released, every queued command commits
        jobs = await asyncio.wait_for(asyncio.gather(first, *queued), 30)
        assert len({job.id for job in jobs}) == MAX_WAITING + 1
        assert store.waiting == 0
        # And nothing of the refused ones was written, then or later
        assert await asyncio.to_thread(written, store.store, [refused, *batch]) == 0
        # And the store takes commands again
        await store.execute(refused, new_job(refused))


@pytest.fixture
async def api(
    overload_settings: StoreSettings, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncJobStore]]:
    """The submitter's app over a real store whose queue is bounded at MAX_WAITING."""
    async with served(overload_settings, redis_url) as api:
        yield api.client, api.deps.store


async def test_the_api_answers_503_with_retry_after_and_refuses_a_batch_whole(
    postgres_url: str, api: tuple[httpx.AsyncClient, AsyncJobStore]
) -> None:
    client, store = api
    key, batch_keys = f"ovl-{uuid.uuid4().hex}", [f"ovl-{uuid.uuid4().hex}" for _ in range(3)]
    with table_locked(postgres_url, store.store):
        # Given a full queue
        first, queued = await fill(postgres_url, store)

        # When a job is submitted, alone and in a batch
        job = {"type": "cpu.hash", "payload": {"text": "x"}, "idempotency_key": key}
        alone = await client.post("/v1/jobs", json=job)
        batch = [{**job, "idempotency_key": k} for k in batch_keys]
        together = await client.post("/v1/jobs/batch", json={"jobs": batch})

        # Then both get 503, a problem document and Retry-After
        for response in (alone, together):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["Retry-After"] == "1"
            body = response.json()
            assert body["status"] == 503 and "overloaded" in body["detail"]

    # When the queue moves again, what was queued commits
    await asyncio.wait_for(asyncio.gather(first, *queued), 30)
    # And none of the refused jobs was written
    ids = [job_id_for_key(k) for k in [key, *batch_keys]]
    assert await asyncio.to_thread(written, store.store, ids) == 0
    # And the same requests, sent again, are accepted
    assert (await client.post("/v1/jobs", json=job)).status_code == 202
    again = await client.post("/v1/jobs/batch", json={"jobs": batch})
    assert again.status_code == 202 and all(item.get("id") for item in again.json())


HOLD_S = 1.0


async def test_a_consumer_holds_a_command_through_a_full_queue_and_never_dead_letters_it(
    postgres_url: str, amqp_url: str, redis_url: str, overload_settings: StoreSettings
) -> None:
    # Given the submitter's command subscribers over a store whose queue is bounded, a hold
    # shorter than the overload and a delivery limit of 2
    bus = BusSettings(
        amqp_url=amqp_url,
        topology_prefix=f"jt-ovl-{uuid.uuid4().hex[:6]}",
        delivery_limit=2,
        hold_s=HOLD_S,
    )
    topology = Routes.from_settings(bus).topology
    redis = RedisSettings(redis_url=redis_url, redis_prefix=f"jt-ovl-{uuid.uuid4().hex}")
    service = Service(
        "submitter",
        prefetch=16,
        serve_health=False,
        bus=bus,
        store=overload_settings,
        redis=redis,
        job_modules=["examples.jobs"],
    )
    keys = [f"ovl-bus-{uuid.uuid4().hex[:8]}-{n}" for n in range(3)]
    try:
        async with service:
            store = service.store
            await service.start(subscribers.router(service), publish=False)
            with table_locked(postgres_url, store.store):
                # And a full queue
                first, queued = await fill(postgres_url, store)
                # When commands arrive and the queue stays full for four holds
                messages = [submit_message(k) for k in keys]
                await publish(amqp_url, topology.commands_exchange, "job.submit", messages)
                await asyncio.sleep(4 * HOLD_S)
                # Then they were refused (not queued) and none was dead-lettered
                assert store.store.stats.overloaded >= len(keys)
                assert store.waiting == MAX_WAITING
                assert await depth(amqp_url, topology.dead_letter_queue) == 0

            # When the queue moves again, every command takes effect, once
            await asyncio.wait_for(asyncio.gather(first, *queued), 30)
            ids = [job_id_for_key(k) for k in keys]

            async def submitted() -> bool:
                return len(await store.get_many(ids)) == len(ids)

            await eventually(submitted, 30, "the commands held through the overload")
            for job_id in ids:
                assert [type(e).__name__ for e in await store.history(job_id)] == [
                    "Submitted",
                    "Scheduled",
                ]
            assert await depth(amqp_url, topology.dead_letter_queue) == 0
    finally:
        await asyncio.to_thread(delete_topology, amqp_url, topology.prefix)
