"""The faults of ../shared/RELIABILITY.md, each under steady load, each ending in the checker.

Scenarios marked ``slow`` run in the full suite (`make chaos`); the rest also run in `make test`.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from shared.domain import Job
from tests.chaos.harness import Load, Scenario, mixed_jobs, scenario

pytestmark = pytest.mark.chaos


@pytest.fixture
def run(
    postgres_server: str,
    amqp_url: str,
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
):  # type: ignore[no-untyped-def]
    def start(name: str, **kwargs):  # type: ignore[no-untyped-def]
        return scenario(name, postgres_server, amqp_url, redis_url, tmp_path, **kwargs)

    return start


def assert_clean(s: Scenario, load: Load, settle_s: float = 120) -> None:
    assert not load.refused, load.refused[:5]
    report = s.check(load, settle_s=settle_s)
    assert report.clean, "\n".join(report.details)
    assert report.jobs == len(load.jobs), f"only {report.jobs} of {len(load.jobs)} acknowledged"


def test_worker_killed_mid_job(run) -> None:  # type: ignore[no-untyped-def]
    with run("worker SIGKILL mid-job") as s:
        load = Load(s.system.base_url, mixed_jobs(300)).start()
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
        load = Load(s.system.base_url, long + mixed_jobs(300)).start()
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
