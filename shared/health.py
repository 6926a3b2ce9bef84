"""Health, readiness and metrics of the scheduler, worker and projector, on a port of their own.

Why a module: three services need the same small HTTP server (``GET /healthz``, ``/readyz``,
``/metrics``) and the same rule for readiness, so it is written once and wired once, by
``shared/service.py``. The submitter keeps its own routes on its API port.

- ``/healthz``: the process and its event loop are alive (the answer is written by the loop).
- ``/readyz``: 200, or 503 with each failing check's reason, as JSON. Readiness means *making
  progress*, not connected: each service registers checks (``Health.check``) that compare
  what its loops last did (a timestamp, a position) with a bound. A check is a plain function
  of values in memory: a probe does no I/O, however often it comes. What needs I/O (the log
  head, a queue's depth) is read by ``Health.monitor``, one loop per process, every
  ``JOBTRAIL_HEALTH_CHECK_S``; it also refreshes the gauges that need those values.
- ``/metrics``: prometheus_client's default registry, in its text format.

The port is ``JOBTRAIL_HEALTH_PORT`` (each service's default, see ``DEFAULT_PORTS``); 0 picks a
free one. The port bound is logged and, when ``JOBTRAIL_HEALTH_PORT_FILE`` is set, written there
(how tests and ``jobtrail up`` find a port picked at random).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"scheduler": 8081, "worker": 8082, "projector": 8083}
"""Each service's health port when JOBTRAIL_HEALTH_PORT is not set (the submitter: its API's)."""

REQUEST_LIMIT = 8192
"""Bytes of request line and header fields read; past it the connection is closed."""


class HealthSettings(BaseSettings):
    """Where the health server listens and the bounds of readiness (prefix JOBTRAIL_HEALTH_)."""

    model_config = SettingsConfigDict(
        env_prefix="JOBTRAIL_HEALTH_", extra="ignore", populate_by_name=True
    )

    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("JOBTRAIL_HEALTH_PORT", "JOBTRAIL_METRICS_PORT"),
        description="unset: the service's default (scheduler 8081, worker 8082, projector "
        "8083); 0: a free port (logged, and written to port_file). JOBTRAIL_METRICS_PORT is a "
        "deprecated alias",
    )
    host: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("JOBTRAIL_HEALTH_HOST", "JOBTRAIL_METRICS_HOST"),
        description="0.0.0.0 to let Prometheus or a probe reach it from another host",
    )
    port_file: Path | None = Field(
        default=None, description="write the port bound here once listening"
    )
    check_s: float = Field(
        default=1.0, gt=0, le=60, description="how often the log head and queue depths are read"
    )
    worker_stall_s: float = Field(
        default=120.0,
        gt=0,
        description="a worker is not ready when a queue of its own has had messages waiting "
        "this long with no delivery taking a slot while one was free (keep it above the "
        "worker's slot_wait_s); every slot busy is ready",
    )
    relay_stall_s: float = Field(
        default=30.0,
        gt=0,
        description="the relay is not ready when it has not advanced (nor caught up) this long",
    )
    projection_max_lag_events: int = Field(
        default=10_000, ge=1, description="the projection is not ready this far behind the head"
    )
    projection_max_lag_s: float = Field(
        default=30.0,
        gt=0,
        description="the projection is not ready when it has not been at the head this long",
    )
    sweep_stall_ticks: int = Field(
        default=60,
        ge=2,
        description="the scheduler leader is not ready when no sweep ended within this many "
        "ticks (JOBTRAIL_SCHEDULER_TICK_S)",
    )


Check = Callable[[], str | None]
"""A readiness check: None when fine, else the reason; no I/O."""


@dataclass
class Progress:
    """How far a follower of the log is (the relay, the projection): kept by its loop, read by
    the checks and the monitor. ``active``: the loop runs here (this process is its leader)."""

    active: bool = False
    position: int = 0
    caught_up_at: float = 0.0
    """time.monotonic() when the loop last read the log and found nothing more for it"""
    moved_at: float = 0.0
    """time.monotonic() when the loop last advanced its position or found itself caught up"""

    def start(self, position: int) -> None:
        self.active, self.position = True, position
        self.moved_at = self.caught_up_at = time.monotonic()

    def advanced(self, position: int) -> None:
        self.position, self.moved_at = position, time.monotonic()

    def at(self, position: int) -> None:
        """The loop found itself at ``position`` (read back from where it keeps it). Behind
        where it was (Redis lost its data, a rebuild started from 0): what it covered before no
        longer counts, so its lag is measured from this position, not from an old catch-up."""
        if position < self.position:
            self.caught_up_at = 0.0
        self.position = position

    def idle(self, read_at: float | None = None) -> None:
        """The loop's read that began at ``read_at`` (time.monotonic(); default now) found
        nothing more than it has now done: it was at the head then."""
        now = time.monotonic()
        self.caught_up_at, self.moved_at = now if read_at is None else read_at, now


@dataclass
class LogHead:
    """The last notification id of the log, as the monitor read it (its last readings kept).

    A follower's lag is the head minus what it has covered: its position, or a head read before
    it last found nothing more to read (the relay reads only the events it publishes, so its
    position may stay below a head of other events while it has nothing to do)."""

    readings: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=1024))
    """(time.monotonic(), head) each time the head was read at a new value: a lag's seconds
    count from the first of them past what a follower covered (a lag older than the window is
    shown as the window's age, far past any bound)."""

    def record(self, head: int) -> None:
        if not self.readings or self.readings[-1][1] != head:
            self.readings.append((time.monotonic(), head))

    @property
    def value(self) -> int | None:
        return self.readings[-1][1] if self.readings else None

    def lag(self, progress: Progress) -> tuple[int, float]:
        """Events and seconds ``progress`` is behind the head (0, 0 when it is there); the
        seconds count from the first reading of a head past what it has covered."""
        if not self.readings:
            return 0, 0.0
        head = self.readings[-1][1]
        seen = [h for t, h in self.readings if t <= progress.caught_up_at]
        covered = max([progress.position, *seen])
        if head <= covered:
            return 0, 0.0
        since = next(t for t, h in self.readings if h > covered)  # the oldest reading ahead
        return head - covered, time.monotonic() - since


def stuck(name: str, progress: Progress, head: LogHead, stall_s: float) -> Check:
    """Not ready when ``progress`` is behind the head and has not moved for ``stall_s``."""

    def check() -> str | None:
        if not progress.active:
            return None
        events, _ = head.lag(progress)
        still = time.monotonic() - progress.moved_at
        if events and still > stall_s:
            return (
                f"{name} stuck at notification {progress.position}, {events} events behind the "
                f"log head {head.value}: no progress for {still:.0f} s (bound {stall_s:g} s)"
            )
        return None

    return check


def lagging(name: str, progress: Progress, head: LogHead, max_events: int, max_s: float) -> Check:
    """Not ready when ``progress`` is more than ``max_events`` or ``max_s`` behind the head."""

    def check() -> str | None:
        if not progress.active:
            return None
        events, seconds = head.lag(progress)
        if events > max_events or seconds > max_s:
            return (
                f"{name} lags: {events} events, {seconds:.0f} s behind the log head "
                f"{head.value} (bounds {max_events} events, {max_s:g} s)"
            )
        return None

    return check


@dataclass
class Health:
    """A process's readiness checks, the samplers its monitor runs, and its health server."""

    service: str
    settings: HealthSettings = field(default_factory=HealthSettings)
    checks: dict[str, Check] = field(default_factory=dict)
    samplers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    started: bool = False
    """Set once the service consumes (``Service.start``); until then it is not ready."""
    port: int = 0
    _server: asyncio.Server | None = None

    def check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def sample(self, sampler: Callable[[], Awaitable[None]]) -> None:
        """Runs ``sampler`` every ``check_s`` (a failure is logged; the checks judge staleness)."""
        self.samplers.append(sampler)

    def readiness(self) -> tuple[bool, dict[str, str]]:
        results = {"started": "ok" if self.started else "starting"}
        for name, check in self.checks.items():
            try:
                reason = check()
            except Exception as exc:  # a check is pure; if it fails, say so
                reason = f"check failed: {type(exc).__name__}: {exc}"
            results[name] = reason or "ok"
        return all(v == "ok" for v in results.values()), results

    async def monitor(self) -> None:
        """Runs the samplers every ``check_s`` (the service's ``run`` supervises it)."""
        while True:
            for sampler in self.samplers:
                try:
                    await asyncio.wait_for(sampler(), timeout=max(self.settings.check_s, 2.0))
                except Exception as exc:
                    log.debug("health sampler %s failed: %r", sampler, exc)
            await asyncio.sleep(self.settings.check_s)

    async def serve(self) -> int:
        """Listens on the configured port (the service's default when unset); returns it."""
        settings = self.settings
        port = DEFAULT_PORTS.get(self.service, 0) if settings.port is None else settings.port
        if "JOBTRAIL_METRICS_PORT" in os.environ and "JOBTRAIL_HEALTH_PORT" not in os.environ:
            log.warning("JOBTRAIL_METRICS_PORT is deprecated: set JOBTRAIL_HEALTH_PORT")
        self._server = await asyncio.start_server(
            self._answer, settings.host, port, limit=REQUEST_LIMIT
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("health on http://%s:%d (/healthz /readyz /metrics)", settings.host, self.port)
        if settings.port_file is not None:
            tmp = settings.port_file.with_name(settings.port_file.name + ".tmp")
            tmp.write_text(f"{self.port}\n")
            tmp.replace(settings.port_file)  # a reader never sees half a number
        return self.port

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = self.route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        try:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def route(self, head: bytes) -> tuple[str, str, bytes]:
        """The status line, content type and body answering a request's head."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or len(head) > REQUEST_LIMIT:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method != b"GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if target == b"/healthz":
            return "200 OK", "application/json", _json({"status": "ok"})
        if target == b"/readyz":
            ready, checks = self.readiness()
            body = _json({"status": "ok" if ready else "unavailable", "checks": checks})
            return ("200 OK" if ready else "503 Service Unavailable"), "application/json", body
        if target == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        return "404 Not Found", "text/plain", b"not found\n"


def _json(document: object) -> bytes:
    return json.dumps(document).encode()
