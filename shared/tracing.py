"""OpenTelemetry traces across the services, off by default and free when off.

Why a module: one job crosses four processes (the submitter's HTTP request, the writer's
on-commit publisher or the projector's relay, the scheduler, a worker). Its trace has to follow
it through the bus (a W3C ``traceparent`` AMQP header on every job event message) and through
the log: a message is built from a committed event, by whichever process publishes it, so the
event records the trace it was written in (``Cause.trace_id``/``span_id``, stored only when
there is one) and the publisher continues from there. A history line names its trace.

Off unless ``OTEL_TRACES_EXPORTER`` says ``otlp`` or ``console`` (``OTEL_SDK_DISABLED=true``
turns it off again): then ``ENABLED`` stays False, the SDK is never imported, and every helper
here returns at its first line (no span, no header, no trace id stored). The exporter reads its
own standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``,
``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` ...).
``JOBTRAIL_TRACES_FILE``: the console exporter writes one JSON span per line to that file
(what the tests read back) instead of stdout.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from shared.domain.cause import SPAN_ID, TRACE_ID, Cause

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

ENABLED = False
"""Whether this process traces; set once, by ``configure`` (or ``enable`` in tests)."""
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
TRACEPARENT = "traceparent"
EXPORTERS = ("otlp", "console", "none")


def configure(service: str, instance: str, environ: Mapping[str, str] | None = None) -> bool:
    """Turns tracing on when the standard variables ask for it; returns whether it is on.
    Raises ValueError for an exporter it does not know (a typo must not silently turn tracing
    off)."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if exporter not in EXPORTERS:
        raise ValueError(f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)}")
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    attributes = {"service.instance.id": instance, "jobtrail.service": service}
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = f"jobtrail-{service}"
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        path = env.get("JOBTRAIL_TRACES_FILE")
        out: IO[str] = open(path, "a", buffering=1) if path else sys.stdout  # noqa: SIM115
        console = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(console))
    enable(provider)
    atexit.register(provider.shutdown)
    return True


def enable(provider: TracerProvider) -> None:
    """Traces through ``provider`` from now on (``configure`` calls it; tests give their own)."""
    global ENABLED, _tracer, _provider
    _provider, _tracer = provider, provider.get_tracer("jobtrail")
    ENABLED = True


def disable() -> None:
    global ENABLED, _tracer, _provider
    ENABLED, _tracer, _provider = False, None, None


def _parent(trace_id: str | None, span_id: str | None) -> Context | None:
    """The remote context of a stored trace, or None for an id that is not one (a row edited
    by hand must not stop a publisher: its message just starts a new trace)."""
    if not (trace_id and span_id and TRACE_ID.fullmatch(trace_id) and SPAN_ID.fullmatch(span_id)):
        return None
    from opentelemetry import trace

    context = trace.SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=trace.TraceFlags(1)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def _extract(headers: Mapping[str, Any] | None) -> Context | None:
    value = headers.get(TRACEPARENT) if headers else None
    if not isinstance(value, str):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({TRACEPARENT: value})


@contextlib.contextmanager
def _span(
    name: str, kind: str, parent: Context | None, attributes: dict[str, Any]
) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind

    assert _tracer is not None
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind[kind], attributes=attributes
    ) as span:
        yield span


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A span under the current one (nothing when tracing is off)."""
    if not ENABLED:
        return _OFF
    return _span(name, "INTERNAL", None, _attrs(attributes))


def server(
    name: str, headers: Mapping[str, Any] | None, **attributes: Any
) -> contextlib.AbstractContextManager[Any]:
    """The span of an HTTP request, continuing a caller's ``traceparent`` header if any."""
    if not ENABLED:
        return _OFF
    return _span(name, "SERVER", _extract(headers), _attrs(attributes))


def consumer(
    name: str, headers: Mapping[str, Any] | None, **attributes: Any
) -> contextlib.AbstractContextManager[Any]:
    """The span of a consumed message, child of its ``traceparent`` header (a message without
    one starts a trace)."""
    if not ENABLED:
        return _OFF
    return _span(name, "CONSUMER", _extract(headers), _attrs(attributes))


@contextlib.contextmanager
def _producing(
    name: str, trace_id: str | None, span_id: str | None, attributes: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    parent = _parent(trace_id, span_id)
    with _span(name, "PRODUCER", parent, attributes) as current:
        context = current.get_span_context()
        flags = int(context.trace_flags)
        yield {TRACEPARENT: f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"}


def producer(
    name: str, trace_id: str | None, span_id: str | None, **attributes: Any
) -> contextlib.AbstractContextManager[dict[str, Any] | None]:
    """The span of publishing a message built from an event written in trace ``trace_id``:
    yields the headers to send (``traceparent``), or None when tracing is off or the event
    has no trace (then nothing is sent: a message without a trace stays as it was)."""
    if not ENABLED or trace_id is None:
        return _OFF
    return _producing(name, trace_id, span_id, _attrs(attributes))


def traced(cause: Cause) -> Cause:
    """``cause`` carrying the current span's ids, so the events it writes name their trace
    (unchanged when tracing is off, no span is current, or the sampler dropped the trace: an
    event names only a trace that was exported)."""
    if not ENABLED:
        return cause
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return cause
    return replace(cause, trace_id=f"{context.trace_id:032x}", span_id=f"{context.span_id:016x}")


def continued(cause: Cause, trace_id: str | None, span_id: str | None, name: str) -> Cause:
    """``cause`` in a span of its own, child of a stored trace (a timer's dispatch continues
    the trace of the event that set the timer). A cause that is already traced is kept."""
    if not ENABLED or cause.trace_id is not None or trace_id is None:
        return cause
    parent = _parent(trace_id, span_id)
    if parent is None:
        return cause
    with _span(name, "INTERNAL", parent, {}):
        return traced(cause)


def current_trace_id() -> str | None:
    """The current trace id (for log lines), or None."""
    if not ENABLED:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def _attrs(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"jobtrail.{k}": str(v) for k, v in attributes.items() if v is not None}
