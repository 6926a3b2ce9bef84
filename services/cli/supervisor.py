"""Runs the four services as separate processes and restarts one that dies."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

SERVICES = ("projector", "scheduler", "worker", "submitter")


@dataclass
class Child:
    name: str
    module: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0


@dataclass
class Supervisor:
    """Starts each service with ``python -m services.<name>``; restarts it when it dies."""

    workers: int = 1
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    log_dir: Path | None = None
    children: list[Child] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        for name in SERVICES:
            count = self.workers if name == "worker" else 1
            for n in range(count):
                label = f"{name}-{n + 1}" if count > 1 else name
                self.children.append(Child(label, f"services.{name}"))

    def _output(self, child: Child) -> IO[bytes] | None:
        if self.log_dir is None:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return (self.log_dir / f"{child.name}.log").open("ab")

    def environment(self, child: Child) -> dict[str, str]:
        """The child's environment: its instance id and a health port of its own (several
        processes share this host): a free one, written to ``<name>.port`` of the log directory
        when there is one (and logged by the service); when the environment names a port P
        (JOBTRAIL_HEALTH_PORT, or the deprecated JOBTRAIL_METRICS_PORT), P + the child's index
        (submitter's API aside, in the order of ``children``), so none collides."""
        env = self.env | {"JOBTRAIL_INSTANCE_ID": f"{child.name}-{os.getpid()}-{child.restarts}"}
        named = (env.get("JOBTRAIL_HEALTH_PORT") or env.get("JOBTRAIL_METRICS_PORT") or "").strip()
        if named and not named.isdigit():
            return env  # the service refuses it, naming the setting
        env.pop("JOBTRAIL_METRICS_PORT", None)
        if named and int(named) != 0:
            env["JOBTRAIL_HEALTH_PORT"] = str(int(named) + self.children.index(child))
        else:
            env["JOBTRAIL_HEALTH_PORT"] = "0"
            if self.log_dir is not None:
                env["JOBTRAIL_HEALTH_PORT_FILE"] = str(self.log_dir / f"{child.name}.port")
        return env

    def _start(self, child: Child) -> None:
        out = self._output(child)
        child.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", child.module],
            env=self.environment(child),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )

    def start(self) -> None:
        for child in self.children:
            self._start(child)

    def watch_once(self) -> list[str]:
        """Restarts children that died (with backoff); returns the names restarted."""
        restarted = []
        now = time.monotonic()
        for child in self.children:
            if child.process is None or child.process.poll() is None or self._stopping.is_set():
                continue
            if child.next_start == 0.0:
                delay = min(2 ** min(child.restarts, 4), 10)
                child.next_start = now + delay
                log.warning(
                    "%s exited with %s; restarting in %d s",
                    child.name,
                    child.process.returncode,
                    delay,
                )
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                self._start(child)
                restarted.append(child.name)
        return restarted

    def request_stop(self) -> None:
        """Makes ``run_until_stopped`` return (safe from a signal handler or another thread);
        ``stop`` then ends the children."""
        self._stopping.set()

    def run_until_stopped(self) -> None:
        """Watches the children (restarting those that die) until ``request_stop`` or ``stop``."""
        while not self._stopping.is_set():
            self.watch_once()
            self._stopping.wait(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to all (graceful), then SIGKILL to those still running after ``timeout``."""
        self.request_stop()
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(5)
