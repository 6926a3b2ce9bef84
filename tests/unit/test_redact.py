"""URLs and configured passwords are redacted before anything prints or logs them."""

from __future__ import annotations

import io
import json
import logging

import pytest

from shared.redact import redact, redact_url
from shared.runtime import setup_logging


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        (
            "postgresql://user:p%40ss@host:5432/db?sslmode=require",
            "postgresql://user:***@host:5432/db?sslmode=require",
        ),
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("postgresql://postgres@127.0.0.1/jobtrail", "postgresql://postgres@127.0.0.1/jobtrail"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact(f"cannot connect to {url} (refused)") == f"cannot connect to {shown} (refused)"


def test_a_configured_password_is_masked_wherever_it_appears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBTRAIL_POSTGRES_URL", "postgresql://u:pa%2Fss@db/jobtrail")
    monkeypatch.setenv("JOBTRAIL_AMQP_URL", "amqp://svc:amqp-secret@mq/")
    monkeypatch.setenv("JOBTRAIL_REDIS_URL", "redis://:redis-secret@cache/0")
    text = "invalid dsn: host=db password=pa/ss; login svc/amqp-secret; AUTH redis-secret"
    assert redact(text) == "invalid dsn: host=db password=***; login svc/***; AUTH ***"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_service_logs_never_carry_a_password(
    monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    monkeypatch.setenv("JOBTRAIL_AMQP_URL", "amqp://svc:amqp-secret@mq/")
    monkeypatch.setenv("JOBTRAIL_LOG_FORMAT", log_format)
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogRecordFactory()
    own = logging.getLogger("jobtrail.test.own")  # a library logger with its own handler
    own_out = io.StringIO()
    own.addHandler(logging.StreamHandler(own_out))
    own.propagate = False
    try:
        setup_logging("test")
        out = io.StringIO()
        for handler in root.handlers:
            handler.setStream(out)  # type: ignore[attr-defined]
        log = logging.getLogger("jobtrail.test")
        log.warning("broker at %s down", "amqp://svc:amqp-secret@mq/")
        try:
            raise ConnectionError("redis://:x-secret@cache/0 refused")
        except ConnectionError:
            log.exception("lost amqp-secret")
        own.error("connecting to %s", "postgresql://u:pg-secret@db/jobtrail")
        text = out.getvalue()
        assert "amqp://svc:***@mq/" in text
        assert "redis://:***@cache/0" in text
        assert "ConnectionError" in text  # the traceback is still there
        assert "secret" not in text.replace("***", "")
        if log_format == "text":
            assert "WARNING test jobtrail.test: broker" in text  # the format is kept
        else:
            first = json.loads(text.splitlines()[0])
            assert first["level"] == "WARNING"
            assert first["service"] == "test"
            assert first["message"] == "broker at amqp://svc:***@mq/ down"
        assert own_out.getvalue() == "connecting to postgresql://u:***@db/jobtrail\n"
        installed = logging.getLogRecordFactory()
        setup_logging("test")  # twice: the redaction is installed once
        assert logging.getLogRecordFactory() is installed
    finally:
        root.handlers[:], level, factory = saved
        root.setLevel(level)
        logging.setLogRecordFactory(factory)
        own.handlers.clear()
        own.propagate = True
