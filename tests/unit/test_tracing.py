"""Tracing in one process: the ids a cause accepts, what an event stores, the span and the
``traceparent`` header a publisher sends for a traced event, and nothing at all when off."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing
from shared.domain import Cause, Job
from shared.outbox import to_message
from shared.publishing import send
from tests.jobs import CAUSE

TRACE_ID, SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


class Recording:
    """Stands in for a FastStream publisher: records each publish's keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def publish(self, body: bytes, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def scheduled(cause: Cause) -> Job.Scheduled:
    job = Job.submit(
        cause, job_type="t", payload={}, priority=0, max_attempts=1, timeout_s=1, queue="default"
    )
    job.dispatch_if_due(cause)
    event = job.pending_events[-1]
    assert isinstance(event, Job.Scheduled)
    return event


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        ("4BF92F3577B34DA6A3CE929D0E0E4736", SPAN_ID),  # uppercase
        ("0" * 32, SPAN_ID),
        (TRACE_ID, "0" * 16),
        (TRACE_ID[:-1], SPAN_ID),
        (TRACE_ID, None),
        (None, SPAN_ID),
        (TRACE_ID + "\n", SPAN_ID),
    ],
)
def test_a_cause_refuses_trace_ids_that_are_not_w3c_ones(trace_id: Any, span_id: Any) -> None:
    with pytest.raises(ValueError, match=r"trace_id|span_id"):
        replace(CAUSE, trace_id=trace_id, span_id=span_id)


def test_an_untraced_event_is_stored_as_before_and_a_traced_one_names_its_trace() -> None:
    untraced = scheduled(CAUSE)
    assert "trace_id" not in CAUSE.meta()
    assert "trace_id" not in vars(untraced) and untraced.trace_id is None
    traced = scheduled(replace(CAUSE, trace_id=TRACE_ID, span_id=SPAN_ID))
    assert (vars(traced)["trace_id"], vars(traced)["span_id"]) == (TRACE_ID, SPAN_ID)


async def test_off_publishes_no_header_and_makes_no_span() -> None:
    assert not tracing.ENABLED
    publishers = {"scheduled": Recording()}
    traced = scheduled(replace(CAUSE, trace_id=TRACE_ID, span_id=SPAN_ID))
    message = to_message(1, traced)
    assert message is not None
    await send(publishers, message)  # type: ignore[arg-type]
    assert "headers" not in publishers["scheduled"].calls[0]
    assert tracing.traced(CAUSE) is CAUSE
    assert tracing.continued(CAUSE, TRACE_ID, SPAN_ID, "x") is CAUSE


async def test_a_traced_event_is_published_in_a_child_span_named_by_its_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    publishers = {"scheduled": Recording()}
    message = to_message(7, scheduled(replace(CAUSE, trace_id=TRACE_ID, span_id=SPAN_ID)))
    assert message is not None
    await send(publishers, message, "relay")  # type: ignore[arg-type]
    (span,) = spans.get_finished_spans()
    assert span.name == "relay job.scheduled.default"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == SPAN_ID
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    headers = publishers["scheduled"].calls[0]["headers"]
    assert headers == {"traceparent": f"00-{TRACE_ID}-{span.context.span_id:016x}-01"}
    # an untraced event (written with tracing off) is sent as before
    await send(publishers, to_message(8, scheduled(CAUSE)))  # type: ignore[arg-type]
    assert "headers" not in publishers["scheduled"].calls[1]


def test_a_consumer_continues_the_header_and_its_cause_carries_the_span(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.consumer("worker run", {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"}):
        cause = tracing.traced(CAUSE)
    (span,) = spans.get_finished_spans()
    assert (cause.trace_id, cause.span_id) == (TRACE_ID, f"{span.context.span_id:016x}")
    # a timer's dispatch continues the job's stored trace in a span of its own
    dispatched = tracing.continued(CAUSE, TRACE_ID, SPAN_ID, "scheduler dispatch")
    assert dispatched.trace_id == TRACE_ID and dispatched.span_id != SPAN_ID
    # a stored id that is not one (a row edited by hand) starts nothing and breaks nothing
    assert tracing.continued(CAUSE, "not-hex", SPAN_ID, "x") is CAUSE
    with tracing.consumer("worker run", {"traceparent": "garbage"}):
        assert tracing.traced(CAUSE).trace_id is not None  # a new trace


def test_configure_reads_the_standard_variables() -> None:
    assert tracing.configure("worker", "w", {}) is False
    assert tracing.configure("worker", "w", {"OTEL_TRACES_EXPORTER": "none"}) is False
    disabled = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert tracing.configure("worker", "w", disabled) is False
    assert not tracing.ENABLED
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        tracing.configure("worker", "w", {"OTEL_TRACES_EXPORTER": "jaeger"})


def test_off_a_service_never_imports_the_sdk() -> None:
    code = (
        "import sys\n"
        "from shared.runtime import setup_logging\n"
        "setup_logging('worker')\n"
        "import services.worker.subscribers, services.scheduler.subscribers\n"
        "import services.submitter.app, services.projector.relay\n"
        "from shared import tracing\n"
        "sdk = sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk.trace'))\n"
        "print(tracing.ENABLED, sdk)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # (redis-py imports the SDK's metrics package for its own observability: not a tracer)
    assert out.stdout.strip() == "False []", out.stdout


def test_an_unsampled_trace_is_not_recorded() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        with tracing.server("POST /v1/jobs", None):
            assert tracing.traced(CAUSE) is CAUSE
        assert exporter.get_finished_spans() == ()
    finally:
        tracing.disable()
