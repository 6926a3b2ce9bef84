"""The four services as real processes against real PostgreSQL, RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from contracts.messages import SubmitJob, SubmitJobMessage
from services.submitter.handlers import job_id_for_message
from shared.domain import Job, Status, job_id_for_key
from shared.domain.errors import JobNotFoundError
from shared.drift import expected_view
from shared.eventstore import JobStore
from shared.eventstore.checkpoints import checkpoints
from shared.eventstore.verify import verify_log
from shared.messaging import Routes
from shared.postgres import connect
from shared.settings import BusSettings
from tests.e2e.helpers import assert_legal_history, settle, wait_for
from tests.processes import System

pytestmark = pytest.mark.e2e

CSV = "city,temp\nOslo,3.5\nRome,17\nCairo,29.25\n"


def mixed_jobs(n: int) -> list[dict[str, Any]]:
    kinds = [
        {"type": "cpu.hash", "payload": {"text": "audit me", "rounds": 50}},
        {"type": "data.stats", "payload": {"csv": CSV, "column": "temp"}},
        {"type": "io.sleep", "payload": {"seconds": 0.1, "steps": 2}},
        {"type": "test.flaky", "payload": {"fail_times": 1}},
        {"type": "test.flaky", "payload": {"fail_times": 99}, "max_attempts": 3},
    ]
    return [kinds[i % len(kinds)] | {"priority": i % 10} for i in range(n)]


def test_mixed_jobs_reach_their_final_state_with_legal_histories(
    system: System, log_store: JobStore, redis_url: str, topology_prefix: str
) -> None:
    # Given 320 jobs of five kinds, submitted over HTTP (three batches and 20 single requests)
    jobs = mixed_jobs(320)
    ids: dict[uuid.UUID, dict[str, Any]] = {}
    with system.client(timeout=30) as http:
        for start in (0, 100, 200):
            response = http.post("/v1/jobs/batch", json={"jobs": jobs[start : start + 100]})
            assert response.status_code == 202, response.text
            for item in response.json():
                assert item["errors"] is None
                ids[uuid.UUID(item["id"])] = jobs[start + item["index"]]
        for job in jobs[300:]:
            response = http.post("/v1/jobs", json=job)
            assert response.status_code == 202, response.text
            assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"
            ids[uuid.UUID(response.json()["id"])] = job

    # When the system has worked through them
    final = settle(log_store, ids, timeout=180)

    # Then each reached the status its kind implies, after exactly the attempts it needed
    for job_id, request in ids.items():
        job = final[job_id]
        events = assert_legal_history(log_store, job_id)
        started = [e for e in events if isinstance(e, Job.Started)]
        if request["payload"].get("fail_times") == 99:
            assert job.status is Status.FAILED, job_id
            assert len(started) == 3
            retries = [e for e in events if isinstance(e, Job.AttemptFailed)]
            assert len(retries) == 2
            for retry, restart in zip(retries, started[1:], strict=True):
                assert retry.retry_at > retry.timestamp  # the backoff is in the history
                assert restart.timestamp >= retry.retry_at  # and was honoured
            assert job.error is not None and "flaky failure" in job.error["message"]
        else:
            assert job.status is Status.COMPLETED, (job_id, job.error)
            expected = 2 if request["payload"].get("fail_times") == 1 else 1
            assert len(started) == expected

    # And the Redis view of every job equals the state folded from its events
    view = redis.Redis.from_url(redis_url, decode_responses=True)

    def projected() -> bool:
        return all(
            view.hget(f"{topology_prefix}:job:{job_id}", "version") == str(final[job_id].version)
            for job_id in ids
        )

    wait_for(projected, 30, "the projection to catch up")
    for job_id, job in final.items():
        cached = view.hgetall(f"{topology_prefix}:job:{job_id}")
        assert cached == expected_view(job)

    # And the log the services wrote verifies: every job's hash chain, and the head against the
    # checkpoints the projector wrote meanwhile
    head = log_store.max_notification_id()
    wait_for(lambda: checkpointed(log_store) >= head, 30, "a checkpoint of the whole log")
    report = verify_log(log_store.settings)
    assert report.ok, report.problems[:5]
    assert report.checkpoints >= 1 and report.events >= head


def checkpointed(store: JobStore) -> int:
    with connect(store.settings, autocommit=False) as conn:
        marks = checkpoints(conn)
    return marks[-1].notification_id if marks else 0


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(
    system: System, log_store: JobStore
) -> None:
    key = f"invoice-{uuid.uuid4()}"
    body = {"type": "cpu.hash", "payload": {"text": "once"}}
    with system.client(timeout=10) as http:
        first = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        again = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        other = http.post(
            "/v1/jobs", json=body | {"payload": {"text": "twice"}}, headers={"Idempotency-Key": key}
        )
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] == str(job_id_for_key(key))
    assert again.json()["replayed"] is True and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    submitted = [e for e in log_store.history(job_id_for_key(key)) if isinstance(e, Job.Submitted)]
    assert len(submitted) == 1


def test_a_job_due_later_runs_no_earlier(system: System, log_store: JobStore) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=2)
    with system.client(timeout=10) as http:
        response = http.post(
            "/v1/jobs",
            json={"type": "cpu.hash", "payload": {"text": "later"}, "run_at": run_at.isoformat()},
        )
    job_id = uuid.UUID(response.json()["id"])
    assert log_store.get(job_id).status is Status.PENDING
    settle(log_store, [job_id], timeout=30)
    started = next(e for e in log_store.history(job_id) if isinstance(e, Job.Started))
    assert started.timestamp >= run_at


def test_cancel_a_pending_job_and_a_running_one(system: System, log_store: JobStore) -> None:
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    with system.client(timeout=10) as http:
        # Given a job due in five minutes and a long job already running
        pending = http.post(
            "/v1/jobs", json={"type": "cpu.hash", "payload": {"text": "x"}, "run_at": later}
        ).json()["id"]
        running = http.post(
            "/v1/jobs", json={"type": "io.sleep", "payload": {"seconds": 30, "steps": 300}}
        ).json()["id"]
        wait_for(
            lambda: http.get(f"/v1/jobs/{running}").json()["status"] == "RUNNING", 20, "RUNNING"
        )

        # When both are cancelled
        first = http.post(f"/v1/jobs/{pending}/cancel", json={"reason": "not needed"})
        second = http.post(f"/v1/jobs/{running}/cancel", json={"reason": "taking too long"})

        # Then the pending one is CANCELLED at once and the running one once its worker stops
        assert first.status_code == 202 and first.json()["status"] == "CANCELLED"
        assert second.status_code == 202 and second.json()["cancel_requested"] is True
        settle(log_store, [uuid.UUID(running)], timeout=20)
        history = [type(e).__name__ for e in log_store.history(uuid.UUID(running))]
        assert history[-2:] == ["CancelRequested", "Cancelled"]
        cancelled = log_store.history(uuid.UUID(running))[-1]
        assert cancelled.worker_id is not None  # acknowledged by the worker running it

        # And cancelling a finished job is a conflict that records nothing
        version = log_store.get(uuid.UUID(pending)).version
        assert http.post(f"/v1/jobs/{pending}/cancel").status_code == 409
        assert log_store.get(uuid.UUID(pending)).version == version


BAD_REQUESTS = [
    ({"type": "cpu.hash"}, 422, "payload.text"),
    ({"type": "cpu.hash", "payload": {"text": 5}}, 422, "payload.text"),
    ({"type": "nope", "payload": {}}, 422, "type"),
    ({"type": "cpu.hash", "payload": {"text": "x"}, "colour": "red"}, 422, "colour"),
    ({"type": "cpu.hash", "payload": {"text": "x"}, "priority": 12}, 422, "priority"),
    ({"type": "cpu.hash", "payload": {"text": "x"}, "queue": "nowhere"}, 422, "queue"),
    (
        {"type": "cpu.hash", "payload": {"text": "x"}, "run_at": "2030-01-01T00:00:00"},
        422,
        "run_at",
    ),
    ({"type": "cpu.hash", "payload": {"text": ["x"] * 10}}, 422, "payload.text"),
    (
        {"type": "cpu.hash", "payload": {"text": "x"}, "run_at": "9999-12-31T23:59:59-14:00"},
        422,
        "run_at",
    ),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(
    system: System, log_store: JobStore, body: dict[str, Any], status: int, field: str
) -> None:
    before = log_store.max_notification_id()
    with system.client(timeout=10) as http:
        response = http.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert log_store.max_notification_id() == before


def test_malformed_oversized_and_unknown_requests(system: System, log_store: JobStore) -> None:
    before = log_store.max_notification_id()
    with system.client(timeout=10) as http:
        malformed = http.post(
            "/v1/jobs", content=b'{"type": ', headers={"content-type": "application/json"}
        )
        deep = http.post(
            "/v1/jobs",
            content=b"[" * 5000 + b"]" * 5000,
            headers={"content-type": "application/json"},
        )
        big = http.post(
            "/v1/jobs", content=b"x" * 1_100_000, headers={"content-type": "application/json"}
        )

        def chunks() -> Any:
            for _ in range(40):
                yield b"y" * 65536

        chunked = http.post(
            "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
        unknown = http.get(f"/v1/jobs/{uuid.uuid4()}")
        not_uuid = http.get("/v1/jobs/not-a-uuid")
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "body"
    assert deep.status_code == 422
    assert big.status_code == 413 and chunked.status_code == 413
    assert unknown.status_code == 404 and not_uuid.status_code == 422
    assert log_store.max_notification_id() == before


def test_a_job_submitted_as_a_message(system: System, log_store: JobStore, amqp_url: str) -> None:
    # Given a SubmitJob message with an idempotency key (invalid ones: test_dead_letters and the
    # poison scenario)
    key = f"msg-{uuid.uuid4()}"
    routes = Routes.from_settings(
        BusSettings(topology_prefix=system.env["JOBTRAIL_TOPOLOGY_PREFIX"])
    )
    good = SubmitJobMessage(
        correlation_id="bus-client-1",
        data=SubmitJob(
            type="data.stats", payload={"csv": CSV, "column": "temp"}, idempotency_key=key
        ),
    )

    async def publish() -> None:
        from faststream.rabbit import RabbitBroker

        async with RabbitBroker(amqp_url) as broker:
            await broker.publish(
                good.model_dump_json().encode(),
                exchange=routes.commands,
                routing_key="job.submit",
                persist=True,
                content_type="application/json",
            )

    # When it is published
    asyncio.run(publish())

    # Then it becomes a job that completes, with the message's correlation id
    job_id = job_id_for_key(key)
    wait_for(lambda: _exists(log_store, job_id), 20, "the message-submitted job")
    job = settle(log_store, [job_id], timeout=30)[job_id]
    assert job.status is Status.COMPLETED and job.result["count"] == 3
    assert log_store.history(job_id)[0].correlation_id == "bus-client-1"


def test_a_keyless_message_delivered_twice_makes_one_job(
    system: System, log_store: JobStore, amqp_url: str
) -> None:
    # Given a SubmitJob message without an idempotency key, sent twice with the same message id
    # (a producer's retry after a lost confirm; a redelivery after a lost ack or a park)
    correlation = f"keyless-{uuid.uuid4().hex}"
    routes = Routes.from_settings(
        BusSettings(topology_prefix=system.env["JOBTRAIL_TOPOLOGY_PREFIX"])
    )
    message = SubmitJobMessage(
        correlation_id=correlation, data=SubmitJob(type="cpu.hash", payload={"text": "k"})
    )

    async def publish_twice() -> None:
        from faststream.rabbit import RabbitBroker

        async with RabbitBroker(amqp_url) as broker:
            for _ in range(2):
                await broker.publish(
                    message.model_dump_json().encode(),
                    exchange=routes.commands,
                    routing_key="job.submit",
                    persist=True,
                    content_type="application/json",
                )

    # When both are consumed
    asyncio.run(publish_twice())

    # Then one job exists for the message, and the log holds one Submitted for its correlation
    job_id = job_id_for_message(message.message_id)
    wait_for(lambda: _exists(log_store, job_id), 20, "the message-submitted job")
    assert settle(log_store, [job_id], timeout=30)[job_id].status is Status.COMPLETED
    time.sleep(1.0)  # the second delivery, if it made a job, has been consumed by now
    submitted = [
        e
        for _, e in log_store.events_after(0, 100_000, [Job.Submitted])
        if e.correlation_id == correlation
    ]
    assert [e.originator_id for e in submitted] == [job_id]


def test_status_falls_back_to_the_log_when_redis_has_no_entry(
    system: System, log_store: JobStore, redis_url: str, topology_prefix: str
) -> None:
    with system.client(timeout=10) as http:
        job_id = http.post("/v1/jobs", json={"type": "cpu.hash", "payload": {"text": "f"}}).json()[
            "id"
        ]
        settle(log_store, [uuid.UUID(job_id)], timeout=30)
        wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["source"] == "cache", 10, "cache")
        cached = http.get(f"/v1/jobs/{job_id}").json()
        redis.Redis.from_url(redis_url).delete(f"{topology_prefix}:job:{job_id}")
        fallback = http.get(f"/v1/jobs/{job_id}").json()
    assert fallback["source"] == "log" and fallback["status"] == "COMPLETED"
    assert fallback["result"]["digest"]
    # and the log's job is the cached one, field for field (one rendering: shared.views)
    assert fallback | {"source": "cache"} == cached


def _exists(store: JobStore, job_id: uuid.UUID) -> bool:
    try:
        store.get(job_id)
    except JobNotFoundError:
        return False
    return True


def test_dead_letters_and_metrics_over_http(system: System) -> None:
    with system.client(timeout=10) as http:
        bad = http.get("/v1/dead-letters", params={"job_id": "not-a-uuid", "limit": 0})
        none = http.get("/v1/dead-letters", params={"job_id": str(uuid.uuid4())})
        metrics = http.get("/metrics")
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"query.job_id", "query.limit"}
    assert none.status_code == 200 and none.json() == []
    assert metrics.status_code == 200
    assert "jobtrail_store_commands_total" in metrics.text
    assert "jobtrail_dead_letters_total" in metrics.text
