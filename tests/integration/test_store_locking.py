"""Per-job locks and the version check, against a real PostgreSQL."""

from __future__ import annotations

import random
import threading
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import IntegrityError

from shared.domain import Job, JobError, Status
from shared.eventstore import JobStore
from tests.jobs import CAUSE, NO_JITTER

THREADS = 8


def submitted(store: JobStore, n: int, *, scheduled: bool = False) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]

    def create(job_id: uuid.UUID) -> Job:
        job = Job.submit(CAUSE, job_type="t", payload={}, max_attempts=1000, job_id=job_id)
        if scheduled:
            job.schedule(CAUSE, datetime.now(UTC))
        return job

    outcomes = store.execute_batch([(i, lambda _, i=i: create(i)) for i in ids])
    assert all(o.error is None for o in outcomes)
    return ids


def versions(store: JobStore, job_id: uuid.UUID) -> list[int]:
    return [e.originator_version for e in store.history(job_id)]


def advance(worker: str):  # type: ignore[no-untyped-def]
    """Whatever the next move of a job is: schedule, start, or fail the attempt (retry)."""

    def command(job: Job | None) -> Job:
        assert job is not None
        now = datetime.now(UTC)
        if job.status is Status.PENDING:
            job.schedule(CAUSE, now.replace(year=now.year + 1))
        elif job.status is Status.SCHEDULED:
            job.start(CAUSE, worker_id=worker, attempt=job.attempt + 1, lease_s=30, now=now)
        else:
            job.fail_attempt(
                CAUSE,
                worker_id=job.worker_id or "",
                attempt=job.attempt,
                error_type="E",
                error_message="m",
                retryable=True,
                now=now,
                backoff=NO_JITTER,
            )
        return job

    return command


def test_contested_claims_have_exactly_one_winner_and_never_conflict(store: JobStore) -> None:
    # Given 30 scheduled jobs and 8 workers that all claim each job at the same moment
    jobs = submitted(store, 30, scheduled=True)
    barrier = threading.Barrier(THREADS)
    wins: dict[uuid.UUID, list[str]] = defaultdict(list)

    def claim_all(worker: str) -> None:
        for job_id in jobs:
            barrier.wait(timeout=30)

            def start(job: Job | None) -> Job:
                assert job is not None
                job.start(CAUSE, worker_id=worker, attempt=1, lease_s=30, now=datetime.now(UTC))
                return job

            try:
                store.execute(job_id, start)
                wins[job_id].append(worker)
            except JobError:
                pass

    # When they race
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(claim_all, [f"w{n}" for n in range(THREADS)]))

    # Then each job has one winner and one Started event, and the lock left nothing to the
    # optimistic check: no command ever met a version conflict
    for job_id in jobs:
        assert len(wins[job_id]) == 1
        started = [e for e in store.history(job_id) if isinstance(e, Job.Started)]
        assert [e.worker_id for e in started] == wins[job_id]
        assert versions(store, job_id) == [1, 2, 3]
    assert store.stats.conflicts == 0


def test_concurrent_commands_lose_no_update(store: JobStore) -> None:
    # Given 10 jobs and 8 threads that keep moving random jobs forward
    jobs = submitted(store, 10)
    acknowledged: dict[uuid.UUID, list[int]] = defaultdict(list)
    guard = threading.Lock()

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            job_id = rng.choice(jobs)
            try:
                job = store.execute(job_id, advance(f"w{seed}"))
            except JobError:
                continue
            with guard:
                acknowledged[job_id].append(job.version)

    # When they run concurrently
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(churn, range(THREADS)))

    # Then every acknowledged command is in the log at its own version, versions are
    # contiguous, and no command ever met a conflict (the lock serialised them)
    for job_id in jobs:
        log = versions(store, job_id)
        assert log == list(range(1, len(log) + 1))
        assert sorted(acknowledged[job_id]) == log[1:]
    assert sum(len(v) for v in acknowledged.values()) == THREADS * 40
    assert store.stats.conflicts == 0


def test_a_writer_that_skips_the_lock_is_caught_by_the_version_check(store: JobStore) -> None:
    # Given a job, loaded by a rogue writer that does not take the lock
    (job_id,) = submitted(store, 1)
    rogue = store.get(job_id)
    rogue.schedule(CAUSE, datetime.now(UTC))

    # When a locked command moves the job first, and then the rogue appends its stale decision
    store.execute(job_id, advance("w1"))
    with pytest.raises(IntegrityError):
        store.app.events.put(rogue.collect_events())

    # Then the log keeps one event per version
    assert versions(store, job_id) == [1, 2]


def test_a_locked_command_that_met_a_rogue_write_is_decided_again(store: JobStore) -> None:
    # Given a locked command paused after loading, while a rogue writer appends behind the lock
    (job_id,) = submitted(store, 1)
    loaded, resume = threading.Event(), threading.Event()
    calls: list[Status] = []

    def slow_schedule(job: Job | None) -> Job:
        assert job is not None
        calls.append(job.status)
        if len(calls) == 1:
            loaded.set()
            resume.wait(timeout=3)
        job.request_cancel(CAUSE)
        return job

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(store.execute, job_id, slow_schedule)
        assert loaded.wait(timeout=10)
        rogue = store.get(job_id)
        rogue.schedule(CAUSE, datetime.now(UTC))
        store.app.events.put(rogue.collect_events())
        resume.set()
        job = future.result(timeout=30)

    # Then the command's first append hit the version check, and it was decided again
    assert calls == [Status.PENDING, Status.SCHEDULED]
    assert store.stats.conflicts == 1
    assert job.status is Status.CANCELLED
    assert [type(e).__name__ for e in store.history(job_id)] == [
        "Submitted",
        "Scheduled",
        "Cancelled",
    ]
