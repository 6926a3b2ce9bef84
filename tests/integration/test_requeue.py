"""POST /v1/jobs/{id}/requeue: the real FastAPI app over real PostgreSQL (no broker needed)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.submitter.deps import Deps
from shared.domain import Job, Status
from shared.eventstore import tables
from shared.settings import StoreSettings
from tests.api import actor_of, served
from tests.jobs import CAUSE, Step, fail, record


@pytest.fixture
async def api(
    store_settings: StoreSettings, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Deps]]:
    async with served(store_settings, redis_url, queues=["default"]) as api:
        yield api.client, api.deps


def to_failed(attempts: int = 1) -> list[Step]:
    """Scheduled, started and failed (not retryable) on its last attempt."""
    now = datetime.now(UTC)
    return [
        lambda j: j.schedule(CAUSE, now),
        lambda j: j.start(CAUSE, worker_id="w1", attempt=attempts, lease_s=30, now=now),
        lambda j: fail(j, attempt=attempts, retryable=False, error_message="boom", now=now),
    ]


async def failed_job(deps: Deps) -> uuid.UUID:
    return await deps.store.run_sync(record, deps.store.store, to_failed(), CAUSE)


async def test_a_failed_job_is_requeued_by_its_operator_and_due_at_once(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a FAILED job (one attempt made)
    client, deps = api
    job_id = await failed_job(deps)

    # When an operator requeues it with two more attempts and a reason
    answer = await client.post(
        f"/v1/jobs/{job_id}/requeue",
        json={"extra_attempts": 2, "reason": "upstream fixed"},
        headers={"X-Principal": "alice"},  # a header never names the actor: the key does
    )

    # Then it is PENDING with two more attempts, recorded with who and why
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["status"], body["attempt"], body["max_attempts"]) == ("PENDING", 1, 3)
    last = (await deps.store.history(job_id))[-1]
    assert isinstance(last, Job.Requeued)
    assert (last.actor, last.reason, last.extra_attempts) == (
        actor_of(client.headers),
        "upstream fixed",
        2,
    )
    # And its timer is due now, so the scheduler dispatches it (the bus, or the sweep)
    timers = await deps.store.run_sync(
        tables.on_connection, deps.store.store, tables.due_timers, 10_000, 0.0
    )
    assert job_id in {due for due, _ in timers}
    # And the default is one more attempt
    other = await failed_job(deps)
    again = await client.post(f"/v1/jobs/{other}/requeue", json={"reason": "retry once"})
    assert again.status_code == 202 and again.json()["max_attempts"] == 2
    assert (await deps.store.history(other))[-1].actor == actor_of(client.headers)


async def test_requeue_is_refused_unless_failed_and_for_an_unknown_job(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    client, deps = api
    pending = await deps.store.run_sync(record, deps.store.store, [], CAUSE)
    failed = await failed_job(deps)
    requeued = await client.post(f"/v1/jobs/{failed}/requeue", json={"reason": "once"})
    assert requeued.status_code == 202
    for job_id in (pending, failed):  # PENDING, and PENDING again after its requeue
        before = len(await deps.store.history(job_id))
        answer = await client.post(f"/v1/jobs/{job_id}/requeue", json={"reason": "again"})
        assert answer.status_code == 409, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert len(await deps.store.history(job_id)) == before  # nothing recorded
    unknown = await client.post(f"/v1/jobs/{uuid.uuid4()}/requeue", json={"reason": "?"})
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, "reason"),
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "   "}, "reason"),
        ({"reason": "x" * 1025}, "reason"),
        ({"reason": 7}, "reason"),
        ({"reason": "ok", "extra_attempts": 0}, "extra_attempts"),
        ({"reason": "ok", "extra_attempts": 101}, "extra_attempts"),
        ({"reason": "ok", "extra_attempts": "many"}, "extra_attempts"),
        ({"reason": "ok", "extra_attempts": 1.5}, "extra_attempts"),
        ({"reason": "ok", "attempts": 2}, "attempts"),
    ],
)
async def test_bad_requeue_input_is_a_422_naming_the_field_and_records_nothing(
    api: tuple[httpx.AsyncClient, Deps], body: Any, field: str
) -> None:
    client, deps = api
    job_id = await failed_job(deps)
    answer = await client.post(f"/v1/jobs/{job_id}/requeue", json=body)
    assert answer.status_code == 422, answer.text
    assert field in {e["field"] for e in answer.json()["errors"]}, answer.json()
    job = await deps.store.get(job_id)
    assert job.status is Status.FAILED and job.version == 4


async def test_a_lone_surrogate_in_the_reason_is_a_422_not_a_500(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    client, deps = api
    job_id = await failed_job(deps)
    answer = await client.post(
        f"/v1/jobs/{job_id}/requeue",
        content=b'{"reason": "bad \\ud800 text"}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert {e["field"] for e in answer.json()["errors"]} == {"reason"}
    assert (await deps.store.get(job_id)).status is Status.FAILED
