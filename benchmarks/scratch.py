"""jobtrail's four services as processes on scratch names, for benchmarks.compare.

A fresh database, topology prefix, Redis prefix and port; ``close()`` stops the processes, drops
the database, deletes the RabbitMQ topology and the Redis keys of the prefix (it runs on failure
and Ctrl-C too: use the object as a context manager).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

import httpx
import psycopg
import redis
from eventsourcing.utils import get_topic
from psycopg import sql

from services.cli.supervisor import Child, Supervisor
from shared import keys
from shared.domain import Job
from shared.eventstore import JobStore, ensure_database
from shared.settings import StoreSettings
from tests.processes import free_port
from tests.services import delete_topology

POSTGRES = os.environ.get("JOBTRAIL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
AMQP = os.environ.get("JOBTRAIL_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS = os.environ.get("JOBTRAIL_BENCH_REDIS", "redis://127.0.0.1:6379/0")
COMPLETED = get_topic(Job.Completed)
EXAMPLE_JOB_MODULES = "examples.jobs"
"""The job types the benchmarks run (``noop``, ``cpu.hash``): loaded explicitly, as production
loads none by default."""


def job_modules(checkout: Path) -> str:
    """The example job types' module in ``checkout`` (older checkouts kept them in shared/)."""
    if (checkout / "examples" / "jobs.py").is_file():
        return EXAMPLE_JOB_MODULES
    return "shared.example_jobs"


@dataclass
class CheckoutSupervisor(Supervisor):
    """Services of another checkout (a git worktree with its own .venv), each started with that
    checkout's interpreter and code: the old side of an A/B benchmark."""

    checkout: Path = Path()

    def _start(self, child: Child) -> None:
        out = self._output(child)
        child.process = subprocess.Popen(  # noqa: S603 (a checkout's own interpreter and module)
            [str(self.checkout / ".venv" / "bin" / "python"), "-m", child.module],
            cwd=self.checkout,
            env=self.env
            | {
                "JOBTRAIL_INSTANCE_ID": f"{child.name}-{os.getpid()}",
                "JOBTRAIL_JOB_MODULES": job_modules(self.checkout),
            },
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )


class ServiceDiedError(RuntimeError):
    pass


class Scratch:
    """The services (``workers`` workers, every other setting at its default) on scratch names."""

    def __init__(self, workers: int = 2, log_level: str = "WARNING") -> None:
        tag = uuid.uuid4().hex[:8]
        self.database = f"jobtrail_cmp_{tag}"
        self.prefix = f"cmp-{tag}"
        self.port = free_port()
        self.postgres_url = f"{POSTGRES}/{self.database}"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key = ""  # an admin key, issued at start
        self.headers: dict[str, str] = {}
        self.log_dir = Path(tempfile.mkdtemp(prefix="jobtrail-compare-"))
        keep = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}
        self.env = keep | {
            "JOBTRAIL_POSTGRES_URL": self.postgres_url,
            "JOBTRAIL_AMQP_URL": AMQP,
            "JOBTRAIL_REDIS_URL": REDIS,
            "JOBTRAIL_TOPOLOGY_PREFIX": self.prefix,
            "JOBTRAIL_REDIS_PREFIX": self.prefix,
            "JOBTRAIL_SUBMITTER_PORT": str(self.port),
            "JOBTRAIL_LOG_LEVEL": log_level,
            "JOBTRAIL_JOB_MODULES": EXAMPLE_JOB_MODULES,
        }
        self.supervisor = Supervisor(workers=workers, env=self.env, log_dir=self.log_dir)
        self.store: JobStore | None = None
        self._poll: psycopg.Connection[Any] | None = None
        self.failed = False

    def __enter__(self) -> Scratch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.failed = kind is not None
        self.close()

    def start(self, timeout: float = 90.0) -> None:
        ensure_database(self.postgres_url)
        self.api_key = keys.issue(self.postgres_url, name="benchmark")
        self.headers = {"Authorization": f"Bearer {self.api_key}"}
        self.supervisor.start()
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=5) as http:
            while True:
                self.check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/readyz").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise ServiceDiedError(f"services not ready after {timeout} s\n{self.tails()}")
                time.sleep(0.2)
        settings = StoreSettings(
            postgres_url=self.postgres_url, postgres_pool_size=1, postgres_max_overflow=1
        )
        self.store = JobStore(settings)

    def pids(self) -> dict[int, str]:
        """pid -> process name (submitter, scheduler, projector, worker-1, worker-2 ...)."""
        return {
            c.process.pid: c.name
            for c in self.supervisor.children
            if c.process is not None and c.process.poll() is None
        }

    def groups(self) -> Mapping[int, str]:
        """pid -> service (the workers together), for the CPU meter."""
        return {pid: name.split("-")[0] for pid, name in self.pids().items()}

    def check_alive(self) -> None:
        dead = [c for c in self.supervisor.children if c.process and c.process.poll() is not None]
        if dead:
            names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in dead if c.process)
            raise ServiceDiedError(f"service(s) died: {names}\n{self.tails()}")

    def tails(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # ----------------------------------------------------------------- reading the log
    def head(self) -> int:
        assert self.store is not None
        return self.store.max_notification_id()

    def completed_count(self, after: int) -> int:
        assert self.store is not None
        if self._poll is None:  # one connection for every poll: no backend forked per poll
            self._poll = psycopg.connect(self.postgres_url, autocommit=True)
        query = sql.SQL("SELECT count(*) FROM {} WHERE notification_id > %s AND topic = %s")
        row = self._poll.execute(query.format(self.store.table), [after, COMPLETED]).fetchone()
        return int(row[0]) if row else 0

    def wait_completed(self, after: int, count: int, timeout: float) -> int:
        """Polls (every 50 ms, one indexed count) until ``count`` jobs completed after
        ``after``; returns how many did, which is fewer when ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            done = self.completed_count(after)
            if done >= count:
                return done
            self.check_alive()
            time.sleep(0.05)
        return done

    def completed_at(self, after: int) -> dict[UUID, float]:
        """job id -> time of its Completed event (epoch seconds), for events after ``after``."""
        assert self.store is not None
        out: dict[UUID, float] = {}
        while True:
            page = self.store.events_after(after, 2000, kinds=[Job.Completed])
            if not page:
                return out
            for _, event in page:
                out[event.originator_id] = event.timestamp.timestamp()
            after = page[-1][0]

    # ----------------------------------------------------------------- clean-up
    def close(self) -> None:
        """Stops the services and deletes everything made under the scratch names; a step that
        fails is reported and the others still run."""
        steps = [
            ("stop the services", self.supervisor.stop),
            ("close the log reader", self.store.close if self.store else lambda: None),
            ("close the poll connection", self._poll.close if self._poll else lambda: None),
            ("delete the RabbitMQ topology", lambda: delete_topology(AMQP, self.prefix)),
            ("drop the database", self._drop_database),
            ("delete the Redis keys", self._delete_redis_keys),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                self.failed = True
                print(f"clean-up: could not {what} ({self.prefix}, {self.database}): {exc!r}")
        if self.failed:
            print(f"service logs kept in {self.log_dir}")
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def _drop_database(self) -> None:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database)
                )
            )

    def _delete_redis_keys(self) -> None:
        client: Any = redis.Redis.from_url(REDIS)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
        finally:
            client.close()
