"""Service logs as JSON lines that name the service, the instance, the job, its correlation id
and its trace; configured once when a service starts.

Why a module: four services on many machines write one stream an operator searches by job or by
trace. A record carries what the process knows at that moment: the service and instance (set
once), and the job being handled with its correlation id (``job(...)``, a context variable the
scheduler's and worker's handlers set around each message) and the current trace id (when
tracing is on, shared/tracing.py). Only those fields and the message are written, never a
record's extra attributes: a payload or a key cannot ride into the log on one. Passwords in
messages and tracebacks are masked before any handler sees them (shared/redact.py).

``JOBTRAIL_LOG_FORMAT``: ``json`` (the default) or ``text``; ``JOBTRAIL_LOG_LEVEL``.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from shared import tracing
from shared.redact import install_log_redaction
from shared.settings import LogSettings

_job: ContextVar[tuple[str, str | None] | None] = ContextVar("jobtrail_log_job", default=None)
NOISY = ("aiormq", "aio_pika", "httpx", "uvicorn.access")


class job:
    """Names ``job_id`` (and its correlation id) in every record logged inside the block."""

    __slots__ = ("_token", "_value")

    def __init__(self, job_id: object, correlation_id: str | None = None) -> None:
        self._value = (str(job_id), correlation_id)

    def __enter__(self) -> None:
        self._token = _job.set(self._value)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _job.reset(self._token)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, service, instance, logger, message, and the job id,
    correlation id and trace id when known; the traceback (already redacted) as ``exc_info``."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service, self.instance = service, instance

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "instance": self.instance,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = _job.get()
        if current is not None:
            line["job_id"], line["correlation_id"] = current
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            line["trace_id"] = trace_id
        if record.exc_info:
            # the record factory of shared.redact has put the redacted traceback in exc_text
            line["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """One readable line, with the job id and trace id in brackets when known."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        current, trace_id = _job.get(), tracing.current_trace_id()
        tags = ([f"job={current[0]}"] if current else []) + (
            [f"trace={trace_id}"] if trace_id else []
        )
        return f"{text} [{' '.join(tags)}]" if tags else text


def configure(service: str, instance: str, settings: LogSettings | None = None) -> None:
    """Sends every record to stderr in the configured format and level, passwords masked;
    quiets the chatty libraries. Called once when a service starts (shared.runtime)."""
    settings = settings or LogSettings()
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(service, instance)
        if settings.log_format == "json"
        else TextFormatter(service)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    install_log_redaction()
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
