"""The worker's handler, through its real router (in memory) over the real store: a work message
runs its job once and records the outcome; a duplicate runs nothing."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from services.worker import subscribers
from services.worker.settings import WorkerSettings
from services.worker.state import WorkerState
from shared.domain import Job, Status
from shared.eventstore import JobStore, existing
from shared.service import Service
from tests.handlers import deliver, in_memory, last_message, service_for
from tests.jobs import CAUSE, NO_JITTER


@pytest.fixture
def worker(postgres_url: str, redis_url: str, amqp_url: str) -> Service:
    return service_for("worker", postgres_url, redis_url, amqp_url)


def scheduled(store: JobStore, job_type: str, payload: dict[str, object], queue: str) -> uuid.UUID:
    job_id = uuid.uuid4()
    store.execute(
        job_id,
        lambda _: Job.submit(CAUSE, job_type=job_type, payload=payload, job_id=job_id, queue=queue),
    )
    store.execute(job_id, existing(lambda job: job.schedule(CAUSE)))
    return job_id


async def test_a_work_message_runs_its_job_once_and_records_the_outcome(
    store: JobStore, worker: Service
) -> None:
    # Given a SCHEDULED job and the worker's router over every work queue
    job_id = scheduled(store, "cpu.hash", {"text": "hi"}, "cpu")
    message = last_message(store, job_id)
    settings = WorkerSettings(concurrency=2)
    state = WorkerState(worker.instance, settings.lease_s, NO_JITTER, worker.registry)
    router = lambda service: subscribers.router(service, state, settings, worker.queues)  # noqa: E731
    async with in_memory(worker, router) as broker:
        # When its work message is delivered twice (the relay's copy after the writer's)
        await deliver(broker, message, worker.routes.events)
        await deliver(broker, message, worker.routes.events)
    # Then it ran once, on this worker, and completed
    history = store.history(job_id)
    assert [type(e).__name__ for e in history] == ["Submitted", "Scheduled", "Started", "Completed"]
    started = history[2]
    assert isinstance(started, Job.Started) and started.worker_id == worker.instance
    assert store.get(job_id).status is Status.COMPLETED
    assert state.executions == 1 and not state.running


async def test_a_failing_job_records_a_retry(store: JobStore, worker: Service) -> None:
    # Given a SCHEDULED job whose handler fails its first attempt
    job_id = scheduled(store, "test.flaky", {"fail_times": 1}, "default")
    settings = WorkerSettings(concurrency=1)
    state = WorkerState(worker.instance, settings.lease_s, NO_JITTER, worker.registry)
    router = lambda service: subscribers.router(service, state, settings, worker.queues)  # noqa: E731
    retries = counted("jobtrail_job_retries_total", {"type": "test.flaky"})
    failed = {"type": "test.flaky", "outcome": "failed"}
    failures = counted("jobtrail_job_attempts_finished_total", failed)
    async with in_memory(worker, router) as broker:
        # When its work message is delivered
        await deliver(broker, last_message(store, job_id), worker.routes.events)
    # Then the attempt is recorded as failed, the job PENDING for its retry, and counted so
    assert [type(e).__name__ for e in store.history(job_id)][-1] == "AttemptFailed"
    assert store.get(job_id).status is Status.PENDING
    assert counted("jobtrail_job_retries_total", {"type": "test.flaky"}) == retries + 1
    assert counted("jobtrail_job_attempts_finished_total", failed) == failures + 1


def counted(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
