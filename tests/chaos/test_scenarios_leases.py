"""Faults around leases, cancels and worker shutdown (issue 9), each under steady load, each
ending in the history checker.

- workers whose clocks are a minute behind and a minute ahead, and a scheduler half a minute
  ahead (libfaketime): no lease may expire and no outcome may be refused while every worker is
  alive;
- a graceful worker stop (SIGTERM) while jobs longer than the lease run: they finish on it, no
  lease expires, nothing runs twice;
- a cancel followed by the worker's death (SIGKILL) before it acknowledges: the job ends
  CANCELLED and never runs again.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.domain import Job, Status
from tests.chaos.checker import Report
from tests.chaos.harness import Load, Scenario, mixed_jobs
from tests.chaos.jobs import executions
from tests.chaos.test_scenarios import assert_clean
from tests.processes import Service

pytestmark = pytest.mark.chaos

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
CORE = ("projector", "scheduler", "submitter")


def skewed(offset: str) -> dict[str, str]:
    """The environment that shifts one process's wall clock by ``offset`` (e.g. "-60s"); its
    monotonic clock is left alone, so timeouts and sleeps keep their length."""
    return {
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }


def add_worker(s: Scenario, name: str, env: dict[str, str] | None = None) -> Service:
    service = Service(name, s.system.env | (env or {}), s.system.log_dir).start()
    s.system.services[name] = service
    return service


def histories(s: Scenario, load: Load) -> dict[uuid.UUID, list[Job.Event]]:
    return {job_id: s.store.history(job_id) for job_id in load.acked.values()}


def count(events: dict[uuid.UUID, list[Job.Event]], kind: type[Job.Event]) -> int:
    return sum(isinstance(e, kind) for history in events.values() for e in history)


def refused_outcomes(s: Scenario) -> int:
    """Outcomes a worker computed and the log refused (the work done, then thrown away)."""
    pattern = re.compile(r"outcome of \S+ attempt \d+ refused")
    return sum(
        len(pattern.findall(service.log_path.read_text(errors="replace")))
        for name, service in s.system.services.items()
        if name.startswith("worker") and service.log_path.exists()
    )


def figures(name: str, started: float, report: Report, **values: Any) -> None:
    """Prints the checker's counts and the scenario's own figures on one FIGURES line."""
    counts = ("jobs", "lost", "duplicated", "illegal", "drift", "executions", "extra")
    values = {field: getattr(report, field) for field in counts} | values
    shown = " ".join(f"{k}={v}" for k, v in values.items())
    print(f"FIGURES {name}: {shown} duration_s={time.monotonic() - started:.0f}")


@pytest.mark.skipif(not FAKETIME_LIB.exists(), reason="needs libfaketime (Debian: faketime)")
def test_worker_clocks_a_minute_behind_and_ahead(run) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with run("worker clocks -60 s and +60 s, scheduler +30 s", services=CORE) as s:
        # Given two workers, one whose clock is a minute behind the database's and one whose
        # clock is a minute ahead (3 s leases), and a scheduler half a minute ahead (it records
        # LeaseExpired and retry times, dispatches timers and expires leases)
        behind = add_worker(s, "worker-behind", skewed("-60s"))
        ahead = add_worker(s, "worker-ahead", skewed("+60s"))
        s.system.services["scheduler"].stop()
        add_worker(s, "scheduler", skewed("+30s"))
        s.faults += 3
        # When 300 mixed jobs (retries with backoff among them) run on them
        load = Load(s.system, mixed_jobs(300)).start()
        load.wait()
        report = assert_clean(s, load)
        # Then no lease expired and no outcome was refused: every worker was alive throughout
        events = histories(s, load)
        expired, refused = count(events, Job.LeaseExpired), refused_outcomes(s)
        by_worker = {
            name: sum(
                1
                for history in events.values()
                for e in history
                if isinstance(e, Job.Started) and e.worker_id.startswith(name)
            )
            for name in ("worker-behind", "worker-ahead")
        }
        figures(
            "clock skew",
            started,
            report,
            lease_expired=expired,
            refused=refused,
            started_by=by_worker,
        )
        assert expired == 0 and refused == 0
        assert report.extra == 0
        # And both skewed workers did work (the clocks really were off: see their event times)
        assert all(by_worker.values()), by_worker
        assert behind.process is not None and behind.process.poll() is None
        assert ahead.process is not None and ahead.process.poll() is None


def test_graceful_worker_stop_with_jobs_longer_than_the_lease(run) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with run("worker SIGTERM with jobs longer than the lease") as s:
        # Given 3 s leases and, among mixed jobs, 24 jobs of 6 to 8 s
        long = [
            {"type": "chaos.work", "payload": {"ms": 6000 + 100 * i}, "priority": 9}
            for i in range(24)
        ]
        load = Load(s.system, long + mixed_jobs(200)).start()

        def long_running_on_a() -> int:
            jobs = s.store.get_many(list(load.acked.values()))
            return sum(
                j.status is Status.RUNNING
                and (j.worker_id or "").startswith("worker-a")
                and j.payload.get("ms", 0) >= 6000
                for j in jobs
            )

        deadline = time.monotonic() + 30
        while long_running_on_a() < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        running_on_a = long_running_on_a()
        assert running_on_a >= 3, "worker-a never ran long jobs"
        # When worker-a is asked to stop while they run
        worker = s.worker()
        worker.signal(signal.SIGTERM)
        s.faults += 1
        assert worker.process is not None
        assert worker.process.wait(timeout=45) == 0
        stopped_after = time.monotonic() - started
        worker.start()  # and comes back
        load.wait()
        report = assert_clean(s, load)
        # Then nothing lost its lease, nothing was handed back and nothing ran twice
        events = histories(s, load)
        expired = count(events, Job.LeaseExpired)
        handed_back = sum(
            isinstance(e, Job.AttemptFailed) and e.error_type == "WorkerShutdown"
            for history in events.values()
            for e in history
        )
        figures(
            "graceful stop",
            started,
            report,
            lease_expired=expired,
            handed_back=handed_back,
            long_running_on_a_at_sigterm=running_on_a,
            worker_exit_s=f"{stopped_after:.0f}",
            refused=refused_outcomes(s),
        )
        assert expired == 0 and handed_back == 0 and refused_outcomes(s) == 0
        assert report.extra == 0


def test_cancel_then_worker_killed_before_it_acknowledges(run) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with run("cancel, then worker SIGKILL before it acknowledges") as s:
        # Given 20 long jobs among mixed ones (the long ones ignore cancels for cancel_grace_s)
        long = [{"type": "chaos.work", "payload": {"ms": 15000}, "priority": 9}] * 20
        load = Load(s.system, long + mixed_jobs(200)).start()

        def long_on_a() -> list[uuid.UUID]:
            jobs = s.store.get_many(list(load.acked.values()))
            return [
                j.id
                for j in jobs
                if j.status is Status.RUNNING
                and (j.worker_id or "").startswith("worker-a")
                and j.payload.get("ms") == 15000
            ]

        deadline = time.monotonic() + 30
        while len(long_on_a()) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        victims = long_on_a()
        assert len(victims) >= 3, "worker-a never ran long jobs"
        # When each is cancelled (202) and worker-a is killed before it acknowledges any
        with s.system.client(timeout=10) as http:
            for job_id in victims:
                answer = http.post(f"/v1/jobs/{job_id}/cancel")
                assert answer.status_code == 202, answer.text
        s.worker().signal(signal.SIGKILL)
        s.faults += 1
        time.sleep(2)
        s.worker().start()
        load.wait()
        report = assert_clean(s, load)
        # Then every cancelled job ended CANCELLED after its lease expired, and never ran again
        runs = executions(s.chaos_dir)
        outcomes: dict[str, int] = {}
        for job_id in victims:
            history = s.store.history(job_id)
            names = [type(e).__name__ for e in history]
            acknowledged = any(isinstance(e, Job.Cancelled) and e.worker_id for e in history)
            key = "acknowledged" if acknowledged else "->".join(names[-3:])
            outcomes[key] = outcomes.get(key, 0) + 1
            assert names[-1] == "Cancelled", names
            assert sum(isinstance(e, Job.Started) for e in history) == 1, names
            assert len(runs.get(str(job_id), [])) == 1
        events = histories(s, load)
        figures(
            "cancel then SIGKILL",
            started,
            report,
            cancelled_victims=len(victims),
            victim_endings=outcomes,
            lease_expired=count(events, Job.LeaseExpired),
        )
