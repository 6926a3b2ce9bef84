"""Point-in-time reads, unknown commit outcomes and idempotent submission, on real PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from shared.domain import IdempotencyConflictError, Job, JobError, Status, job_id_for_key
from shared.domain.errors import JobNotFoundError
from shared.eventstore import JobStore
from shared.settings import StoreSettings
from tests.jobs import CAUSE


def run_to_completion(store: JobStore) -> uuid.UUID:
    job_id = uuid.uuid4()
    store.execute(job_id, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id))

    def schedule(job: Job | None) -> Job:
        assert job is not None
        job.schedule(CAUSE, datetime.now(UTC))
        return job

    def start(job: Job | None) -> Job:
        assert job is not None
        job.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=datetime.now(UTC))
        return job

    def complete(job: Job | None) -> Job:
        assert job is not None
        job.complete(CAUSE, worker_id="w1", attempt=1, result={"answer": 42})
        return job

    for command in (schedule, start, complete):
        store.execute(job_id, command)
    return job_id


def test_state_at_each_version_and_at_each_time(store: JobStore) -> None:
    # Given a job that went PENDING -> SCHEDULED -> RUNNING -> COMPLETED
    job_id = run_to_completion(store)
    history = store.history(job_id)
    expected = [Status.PENDING, Status.SCHEDULED, Status.RUNNING, Status.COMPLETED]

    # When we ask for it at each version and at each event's time
    # Then each answer is the status the job had then
    assert [store.get(job_id, version=v).status for v in (1, 2, 3, 4)] == expected
    assert [store.get_at(job_id, e.timestamp).status for e in history] == expected
    just_before_start = history[2].timestamp - timedelta(microseconds=1)
    assert store.get_at(job_id, just_before_start).status is Status.SCHEDULED
    assert store.get_at(job_id, datetime.now(UTC)).result == {"answer": 42}
    with pytest.raises(JobNotFoundError):
        store.get_at(job_id, history[0].timestamp - timedelta(seconds=1))
    with pytest.raises(JobNotFoundError):
        store.get(uuid.uuid4())


class CommitThenDrop(JobStore):
    """Commits, then reports a lost connection once: the write happened but an error came back."""

    def __init__(self, settings: StoreSettings, *, commit_first: bool) -> None:
        super().__init__(settings)
        self.commit_first = commit_first
        self.tripped = True  # armed by the test

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        if self.tripped:
            return super()._commit(conn)
        self.tripped = True
        if self.commit_first:
            super()._commit(conn)
        else:
            conn.execute("ROLLBACK")
        raise psycopg.OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize("commit_first", [True, False], ids=["committed", "rolled-back"])
def test_an_unknown_commit_outcome_is_decided_by_re_reading(
    store_settings: StoreSettings, commit_first: bool
) -> None:
    # Given a scheduled job and a connection that fails at COMMIT
    store = CommitThenDrop(store_settings, commit_first=commit_first)
    job_id = uuid.uuid4()
    try:
        store.execute(job_id, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id))

        # When a worker claims it and COMMIT's answer is lost
        def start(job: Job | None) -> Job:
            assert job is not None
            job.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=datetime.now(UTC))
            return job

        store.execute(job_id, lambda j: (j.schedule(CAUSE, datetime.now(UTC)), j)[1])  # type: ignore[union-attr]
        store.tripped = False
        job = store.execute(job_id, start)

        # Then the claim succeeds exactly once, whether or not the first COMMIT took effect
        assert job.status is Status.RUNNING
        names = [type(e).__name__ for e in store.history(job_id)]
        assert names == ["Submitted", "Scheduled", "Started"]
        assert store.stats.unknown_commits == 1
    finally:
        store.close()


def test_the_same_idempotency_key_makes_one_job(store: JobStore) -> None:
    # Given one idempotency key, submitted by 8 clients at once
    key = f"order-{uuid.uuid4()}"
    job_id = job_id_for_key(key)
    request = {"job_type": "t", "payload": {"order": 7}, "idempotency_key": key}

    def submit(_: int) -> uuid.UUID:
        return store.execute(job_id, lambda cur: Job.submit_once(cur, CAUSE, **request)).id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(8)))

    # Then there is one job with one Submitted event
    assert ids == {job_id}
    assert [type(e).__name__ for e in store.history(job_id)] == ["Submitted"]

    # And the same key with another body is refused, with nothing appended
    other = {**request, "payload": {"order": 8}}
    with pytest.raises(IdempotencyConflictError):
        store.execute(job_id, lambda cur: Job.submit_once(cur, CAUSE, **other))
    assert len(store.history(job_id)) == 1


def test_a_refused_command_in_a_batch_leaves_the_others(store: JobStore) -> None:
    # Given a batch where the middle command is illegal
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def submit(job_id: uuid.UUID) -> Any:
        return lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id)

    def complete_unstarted(job: Job | None) -> Job:
        assert job is not None
        job.complete(CAUSE, worker_id="w", attempt=0, result=None)
        return job

    outcomes = store.execute_batch(
        [(a, submit(a)), (b, submit(b)), (b, complete_unstarted), (c, submit(c))]
    )

    # Then the illegal one failed alone and the rest committed together
    assert [o.error is None for o in outcomes] == [True, True, False, True]
    assert isinstance(outcomes[2].error, JobError)
    assert [len(store.history(x)) for x in (a, b, c)] == [1, 1, 1]


def test_a_transaction_ended_by_the_server_is_decided_again(postgres_url: str) -> None:
    # Given a store whose sessions PostgreSQL ends after 1 s idle in a transaction
    settings = StoreSettings(postgres_url=postgres_url, postgres_idle_in_transaction_timeout_s=1)
    store = JobStore(settings)
    job_id = uuid.uuid4()
    calls: list[int] = []

    def slow_submit(current: Job | None) -> Job:
        calls.append(1)
        if len(calls) == 1:
            import time

            time.sleep(1.5)  # a paused process (SIGSTOP, GC, swap) inside the transaction
        return Job.submit(CAUSE, job_type="t", payload={}, job_id=job_id)

    try:
        # When the first try's session is ended under it
        job = store.execute(job_id, slow_submit)
        # Then the command was decided again and committed once
        assert len(calls) == 2 and job.version == 1
        assert len(store.history(job_id)) == 1
    finally:
        store.close()
