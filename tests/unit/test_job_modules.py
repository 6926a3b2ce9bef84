"""Production loads no example job types; `jobtrail up`/`demo` and the tests load them by name."""

from __future__ import annotations

import logging

import pytest

from services.cli import run
from shared.jobtypes import Registry
from shared.settings import JobSettings


def test_the_production_default_loads_no_job_types_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given no JOBTRAIL_JOB_MODULES
    monkeypatch.delenv("JOBTRAIL_JOB_MODULES", raising=False)

    # When a service loads its job types as every bootstrap does
    with caplog.at_level(logging.WARNING, logger="shared.jobtypes"):
        loaded = Registry().load(JobSettings().job_modules)

    # Then it names no module and knows no type (a worker consumes no type's queue), and warns
    assert JobSettings().job_modules == []
    assert loaded.names() == [] and loaded.queues() == []
    assert "no job types" in caplog.text and "JOBTRAIL_JOB_MODULES" in caplog.text


def test_the_examples_load_when_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("JOBTRAIL_JOB_MODULES", "examples.jobs")
    from shared.jobtypes import registry  # the examples register in the process-wide registry

    with caplog.at_level(logging.WARNING, logger="shared.jobtypes"):
        registry.load(JobSettings().job_modules)
    assert {"cpu.hash", "io.sleep", "data.stats", "test.flaky", "noop"} <= set(registry.names())
    assert "no job types" not in caplog.text


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "examples.jobs"), ("myapp.jobs", "myapp.jobs"), ("", "")],
)
def test_up_and_demo_load_the_examples_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str
) -> None:
    # Given the servers answer and the role is set up (both stubbed: this is about the variable)
    monkeypatch.setattr(run, "check_infrastructure", lambda: [])
    monkeypatch.setattr(run, "service_environment", lambda: dict(environ))
    environ = {"JOBTRAIL_SERVICE_ROLE": "jobtrail_service"}
    if given is not None:
        environ["JOBTRAIL_JOB_MODULES"] = given

    # When `up` or `demo` builds the services' environment
    env = run.development_environment()

    # Then the services load the examples, unless the user named modules (even none)
    assert env["JOBTRAIL_JOB_MODULES"] == expected
