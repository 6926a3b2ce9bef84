"""SIGTERM: a worker finishes the jobs it started and hands the others back."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest

from shared.domain import Job, Status
from shared.eventstore import JobStore
from shared.settings import StoreSettings
from tests.e2e.helpers import settle, wait_for
from tests.processes import Service, System, free_port, system_env
from tests.services import delete_topology, fresh_database

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_system(
    postgres_server: str,
    amqp_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[System, JobStore]]:
    """One worker that runs two jobs at a time (6 s leases); a test may add to its environment
    with ``@pytest.mark.parametrize("small_system", [{...}], indirect=True)``."""
    prefix = f"jt-stop-{uuid.uuid4().hex[:6]}"
    with fresh_database(postgres_server, "shutdown") as url:
        env = system_env(url, amqp_url, redis_url, prefix, free_port())
        env["JOBTRAIL_WORKER_CONCURRENCY"] = "2"
        env |= getattr(request, "param", None) or {}
        running = System(
            env, tmp_path_factory.mktemp("shutdown"), int(env["JOBTRAIL_SUBMITTER_PORT"])
        )
        running.start(("projector", "scheduler", "worker", "submitter"))
        store = JobStore(StoreSettings(postgres_url=url))
        try:
            running.wait_ready()
            yield running, store
        finally:
            running.stop()
            store.close()
            delete_topology(amqp_url, prefix)


def test_sigterm_finishes_started_jobs_and_returns_the_rest(
    small_system: tuple[System, JobStore],
) -> None:
    system, store = small_system
    worker = system.services["worker"]
    # Given five 2-second jobs, two of them running
    with system.client(timeout=10) as http:
        ids = [
            uuid.UUID(
                http.post(
                    "/v1/jobs", json={"type": "io.sleep", "payload": {"seconds": 2, "steps": 4}}
                ).json()["id"]
            )
            for _ in range(5)
        ]

    def two_running() -> bool:
        return sum(store.get(i).status is Status.RUNNING for i in ids) == 2

    wait_for(two_running, 20, "two jobs running")

    # When the worker is asked to stop
    worker.signal(signal.SIGTERM)
    assert worker.process is not None
    assert worker.process.wait(timeout=40) == 0

    # Then the two it started completed, and the others are still waiting, never started
    statuses = [store.get(i).status for i in ids]
    assert statuses.count(Status.COMPLETED) == 2
    assert statuses.count(Status.SCHEDULED) == 3

    # And a new worker runs them, each exactly once
    system.services["worker"] = Service("worker", system.env, system.log_dir).start()
    jobs = settle(store, ids, timeout=40)
    assert all(job.status is Status.COMPLETED for job in jobs.values())
    for job_id in ids:
        assert sum(isinstance(e, Job.Started) for e in store.history(job_id)) == 1


def _submit_sleepers(system: System, n: int, seconds: float) -> list[uuid.UUID]:
    with system.client(timeout=10) as http:
        return [
            uuid.UUID(
                http.post(
                    "/v1/jobs",
                    json={"type": "io.sleep", "payload": {"seconds": seconds, "steps": 20}},
                ).json()["id"]
            )
            for _ in range(n)
        ]


def test_sigterm_keeps_leases_alive_while_jobs_longer_than_the_lease_finish(
    small_system: tuple[System, JobStore],
) -> None:
    system, store = small_system
    worker = system.services["worker"]
    # Given two 10-second jobs running on the worker, whose leases last 6 s
    ids = _submit_sleepers(system, 2, 10)
    wait_for(
        lambda: all(store.get(i).status is Status.RUNNING for i in ids), 20, "both jobs running"
    )

    # When the worker is asked to stop
    worker.signal(signal.SIGTERM)
    assert worker.process is not None
    assert worker.process.wait(timeout=40) == 0

    # Then both jobs completed on it, their leases renewed to the end: no LeaseExpired, one run
    for job_id in ids:
        history = store.history(job_id)
        names = [type(e).__name__ for e in history]
        assert names == ["Submitted", "Scheduled", "Started", "Completed"], names


@pytest.mark.parametrize("small_system", [{"JOBTRAIL_WORKER_SHUTDOWN_GRACE_S": "2"}], indirect=True)
def test_sigterm_hands_back_what_outlives_the_grace_for_a_retry_at_once(
    small_system: tuple[System, JobStore],
) -> None:
    system, store = small_system
    worker = system.services["worker"]
    # Given a 30-second job running on a worker that gives jobs 2 s to finish when stopped
    (job_id,) = _submit_sleepers(system, 1, 30)
    wait_for(lambda: store.get(job_id).status is Status.RUNNING, 20, "the job running")

    # When the worker is asked to stop
    worker.signal(signal.SIGTERM)
    assert worker.process is not None
    assert worker.process.wait(timeout=20) == 0

    # Then the attempt was handed back at once, with no backoff, and no lease expired
    history = store.history(job_id)
    assert not any(isinstance(e, Job.LeaseExpired) for e in history)
    failed = [e for e in history if isinstance(e, Job.AttemptFailed)]
    assert len(failed) == 1 and failed[0].error_type == "WorkerShutdown", history
    assert failed[0].retry_at <= failed[0].timestamp
    # And it is waiting for the next worker as attempt 2, already dispatched
    wait_for(lambda: store.get(job_id).status is Status.SCHEDULED, 10, "attempt 2 dispatched")
    assert store.get(job_id).attempt == 1
