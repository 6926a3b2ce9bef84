"""Services as real OS processes, for end-to-end and fault tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.api import bearer, issue_key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One service process; its output goes to a log file the test can show on failure."""

    name: str
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> Service:
        module = self.name.split("-")[0]
        self.starts += 1
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{module}"],
            env=self.env | {"JOBTRAIL_INSTANCE_ID": f"{self.name}-{self.starts}"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class System:
    """The four services (two workers) against the test session's databases and prefix."""

    env: dict[str, str]
    log_dir: Path
    port: int
    services: dict[str, Service] = field(default_factory=dict)
    api_key: str = ""
    """An admin key of the default tenant, issued before the first start (also in the env as
    JOBTRAIL_API_KEY, which the CLI reads)."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.api_key)

    def client(self, timeout: float = 10, **options: Any) -> httpx.Client:
        """An HTTP client of the submitter that sends the system's key."""
        return httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=self.headers, **options
        )

    def start(self, names: tuple[str, ...]) -> None:
        if not self.api_key:
            self.api_key = issue_key(self.env["JOBTRAIL_POSTGRES_URL"], name="tests")
            self.env["JOBTRAIL_API_KEY"] = self.api_key
        for name in names:
            self.services[name] = Service(name, self.env, self.log_dir).start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for service in self.services.values():
                assert service.process is not None
                if service.process.poll() is not None:
                    raise RuntimeError(f"{service.name} exited:\n{service.tail()}")
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=2)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"the system did not become ready: {last}\n{self.logs()}")

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.tail()}" for s in self.services.values())


EXAMPLE_JOB_MODULES = "examples.jobs"
"""The job types the services under test know: loaded explicitly (production loads none)."""


def system_env(
    postgres_url: str, amqp_url: str, redis_url: str, prefix: str, port: int
) -> dict[str, str]:
    """The environment that points every service at one test session's resources."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRAIL_")}
    return keep | {
        "JOBTRAIL_POSTGRES_URL": postgres_url,
        "JOBTRAIL_AMQP_URL": amqp_url,
        "JOBTRAIL_REDIS_URL": redis_url,
        "JOBTRAIL_TOPOLOGY_PREFIX": prefix,
        "JOBTRAIL_REDIS_PREFIX": prefix,
        "JOBTRAIL_SUBMITTER_PORT": str(port),
        "JOBTRAIL_RETRY_BASE_S": "0.3",
        "JOBTRAIL_RETRY_CAP_S": "2",
        "JOBTRAIL_RETRY_JITTER": "0.2",
        "JOBTRAIL_WORKER_LEASE_S": "6",
        "JOBTRAIL_WORKER_CONCURRENCY": "32",
        "JOBTRAIL_WORKER_CANCEL_POLL_S": "0.3",
        "JOBTRAIL_SCHEDULER_TICK_S": "0.2",
        "JOBTRAIL_CHECKPOINT_INTERVAL_S": "1",
        "JOBTRAIL_LOG_LEVEL": "INFO",
        "JOBTRAIL_JOB_MODULES": EXAMPLE_JOB_MODULES,
        # long polls cut short: the OpenAPI run asks up to 60 s waits of a running job, with a
        # 10 s request timeout; a client's wait asks again (tests/e2e/test_client.py)
        "JOBTRAIL_SUBMITTER_WAIT_MAX_S": "2",
    }
