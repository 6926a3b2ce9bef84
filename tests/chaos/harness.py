"""Runs one fault scenario: a fresh system under steady load, a fault, then the checker."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from shared.domain.errors import JobNotFoundError
from shared.domain.status import TERMINAL
from shared.eventstore import JobStore
from shared.eventstore.verify import verify_log
from shared.settings import StoreSettings
from tests.chaos.checker import Report, check
from tests.chaos.jobs import executions
from tests.processes import System, free_port, system_env
from tests.services import delete_topology, fresh_database

ROOT = Path(__file__).resolve().parents[2]
ROWS: list[dict[str, Any]] = []
"""One row per scenario, printed as the reliability table at the end of the session."""

CHAOS_ENV = {
    "JOBTRAIL_JOB_MODULES": "examples.jobs,tests.chaos.jobs",
    "JOBTRAIL_WORKER_LEASE_S": "3",
    "JOBTRAIL_WORKER_CONCURRENCY": "16",
    "JOBTRAIL_WORKER_CANCEL_POLL_S": "0.5",
    "JOBTRAIL_SCHEDULER_TICK_S": "0.2",
    "JOBTRAIL_SCHEDULER_MISSED_GRACE_S": "3",
    "JOBTRAIL_RETRY_BASE_S": "0.2",
    "JOBTRAIL_RETRY_CAP_S": "1",
    "JOBTRAIL_RETRY_JITTER": "0.2",
    "JOBTRAIL_PROJECTOR_LEADER_CHECK_S": "0.5",
    "JOBTRAIL_SCHEDULER_LEADER_CHECK_S": "0.5",
}


def mixed_jobs(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Short, slow, flaky and poison jobs, with random priorities."""
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        kind = i % 10
        payload: dict[str, Any] = {"ms": rng.randint(20, 300)}
        body: dict[str, Any] = {"type": "chaos.work", "priority": rng.randint(0, 9)}
        if kind == 7:
            payload["fail_times"] = rng.randint(1, 2)
        elif kind == 8:
            payload["ms"] = rng.randint(1000, 2500)  # slow: likely running when the fault hits
        elif kind == 9 and i % 20 == 9:
            payload["fail_times"] = 99  # poison: FAILED after max_attempts
            body["max_attempts"] = 3
        jobs.append(body | {"payload": payload})
    return jobs


@dataclass
class Load:
    """Submits jobs at a steady rate; retries a refused submission with the same key."""

    system: System
    jobs: list[dict[str, Any]]
    rate_per_s: float = 60.0
    give_up_s: float = 120.0
    acked: dict[str, uuid.UUID] = field(default_factory=dict)
    unavailable: int = 0  # 503 answers (with Retry-After)
    refused: list[str] = field(default_factory=list)  # any other answer: a bug
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, threads: int = 2) -> Load:
        for n in range(threads):
            share = self.jobs[n::threads]
            thread = threading.Thread(target=self._run, args=(share, self.rate_per_s / threads))
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, jobs: list[dict[str, Any]], rate: float) -> None:
        with self.system.client(timeout=10) as http:
            for body in jobs:
                key = uuid.uuid4().hex
                deadline = time.monotonic() + self.give_up_s
                while time.monotonic() < deadline:
                    try:
                        response = http.post(
                            "/v1/jobs", json=body, headers={"Idempotency-Key": key}
                        )
                    except httpx.HTTPError:  # connection errors, timeouts: try again
                        time.sleep(0.2)
                        continue
                    if response.status_code == 202:
                        self.acked[key] = uuid.UUID(response.json()["id"])
                        break
                    if response.status_code == 503:
                        assert response.headers.get("Retry-After")
                        self.unavailable += 1
                        time.sleep(0.2)
                        continue
                    self.refused.append(f"{response.status_code} {response.text[:200]}")
                    break
                time.sleep(1 / rate)

    def wait(self, timeout: float = 300) -> None:
        for thread in self._threads:
            thread.join(timeout)


@dataclass
class Scenario:
    name: str
    system: System
    store: JobStore
    cache: redis.Redis
    prefix: str
    chaos_dir: Path
    faults: int = 0
    evictable: bool = False  # Redis may evict keys: a missing hash is not drift

    def worker(self, name: str = "worker-a") -> Any:
        return self.system.services[name]

    def settle(self, ids: list[uuid.UUID], timeout: float = 120) -> None:
        """Waits until every job has ended (bounded): the checker counts what did not."""
        deadline = time.monotonic() + timeout
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            try:
                jobs = self.store.get_many(sorted(pending))
            except Exception:  # the database may just be coming back
                time.sleep(0.5)
                continue
            pending -= {job.id for job in jobs if job.status in TERMINAL}
            time.sleep(0.3)

    def projected(
        self, ids: list[uuid.UUID], timeout: float = 60
    ) -> dict[uuid.UUID, dict[str, str]]:
        """The Redis view of each job, once the projection has caught up with the log (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            pipe = self.cache.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(f"{self.prefix}:job:{job_id}")
            cached = {job_id: v for job_id, v in zip(ids, pipe.execute(), strict=True) if v}
            versions = {j.id: j.version for j in self.store.get_many(ids)}
            if self.evictable:  # the projection has passed the end of the log: what is there counts
                position = int(self.cache.get(f"{self.prefix}:projection:position") or 0)
                caught_up = position >= self.store.max_notification_id() and all(
                    cached[i].get("version") == str(versions.get(i)) for i in cached
                )
            else:
                caught_up = all(
                    cached.get(i, {}).get("version") == str(versions.get(i)) for i in ids
                )
            if caught_up or time.monotonic() > deadline:
                return cached
            time.sleep(0.3)

    def check(self, load: Load, *, settle_s: float = 120) -> Report:
        ids = list(load.acked.values())
        self.settle(ids, settle_s)
        cached = self.projected(ids)
        histories = {}
        for job_id in ids:
            with contextlib.suppress(JobNotFoundError):
                histories[job_id] = self.store.history(job_id)
        report = check(histories, ids, cached, executions(self.chaos_dir), evictable=self.evictable)
        integrity = verify_log(self.store.settings)  # chains, checkpoints
        for problem in integrity.problems:
            report.note("chain", problem.job_id, str(problem))
        ROWS.append(
            {
                "scenario": self.name,
                "submitted": len(load.jobs),
                "acknowledged": len(ids),
                "faults": self.faults,
                "lost": report.lost,
                "duplicated": report.duplicated,
                "illegal": report.illegal,
                "drift": report.drift,
                "chain": report.chain,
                "executions": report.executions,
                "extra executions": report.extra,
                "unexplained": report.unexplained,
                "503s": load.unavailable,
            }
        )
        return report


@contextlib.contextmanager
def scenario(
    name: str,
    postgres_server: str,
    amqp_url: str,
    redis_url: str,
    tmp: Path,
    services: tuple[str, ...] = ("projector", "scheduler", "worker-a", "worker-b", "submitter"),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Scenario]:
    prefix = f"jt-chaos-{uuid.uuid4().hex[:6]}"
    chaos_dir = tmp / "runs"
    chaos_dir.mkdir(parents=True, exist_ok=True)
    with fresh_database(postgres_server, "chaos") as url:
        env = system_env(url, amqp_url, redis_url, prefix, free_port()) | CHAOS_ENV
        env |= {"JOBTRAIL_CHAOS_DIR": str(chaos_dir), "PYTHONPATH": str(ROOT)} | (extra_env or {})
        system = System(env, tmp, int(env["JOBTRAIL_SUBMITTER_PORT"]))
        system.start(services)
        store = JobStore(StoreSettings(postgres_url=url, postgres_pool_size=2))
        cache = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            system.wait_ready()
            yield Scenario(name, system, store, cache, prefix, chaos_dir)
        finally:
            system.stop()
            store.close()
            delete_topology(amqp_url, prefix)
            with contextlib.suppress(Exception):
                keys = list(cache.scan_iter(f"{prefix}:*", count=1000))
                for start in range(0, len(keys), 1000):
                    cache.delete(*keys[start : start + 1000])
            print(system.logs())
