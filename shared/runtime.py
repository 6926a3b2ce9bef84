"""Process plumbing every service shares: logging, instance ids, SIGTERM handling, the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable

from shared import logs, tracing
from shared.settings import RuntimeSettings


def instance_id(service: str) -> str:
    """``<service>/<host>-<pid>``, unless JOBTRAIL_INSTANCE_ID names the instance."""
    return (
        os.environ.get("JOBTRAIL_INSTANCE_ID") or f"{service}/{socket.gethostname()}-{os.getpid()}"
    )


def setup_logging(service: str) -> None:
    """Configures the process once as service ``service`` starts: its log (shared.logs: JSON
    lines by default, JOBTRAIL_LOG_FORMAT and JOBTRAIL_LOG_LEVEL, passwords masked) and its
    traces (shared.tracing: off unless OTEL_TRACES_EXPORTER asks for them)."""
    instance = instance_id(service)
    logs.configure(service, instance)
    tracing.configure(service, instance)


def tune_runtime(settings: RuntimeSettings | None = None) -> None:
    """Called by each service's ``__main__`` before it starts its event loop.

    JOBTRAIL_UVLOOP: the loop runs on uvloop, whose loop, transports and timers are C (every
    consumed message, query and publish goes through them). It only changes how fast the same
    code runs; docs/performance.md has the A/B figures (and why ``gc.freeze`` is not here).
    """
    settings = settings or RuntimeSettings()
    if settings.uvloop:
        try:
            import uvloop
        except ImportError:  # a platform uvloop does not support: the stock loop
            logging.getLogger("jobtrail.runtime").info("uvloop is not installed: asyncio's loop")
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for graceful shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def supervise(tasks: dict[str, Callable[[], Awaitable[None]]], stop: asyncio.Event) -> None:
    """Runs long-lived loops until ``stop`` is set; a loop that crashes is logged and restarted."""
    log = logging.getLogger("jobtrail.runtime")

    async def keep(name: str, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in 1 s", name)
                await asyncio.sleep(1.0)

    running = [asyncio.create_task(keep(name, fn), name=name) for name, fn in tasks.items()]
    await stop.wait()
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
