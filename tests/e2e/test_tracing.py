"""Traces and logs of the four services as real processes: one job makes one trace across the
submitter, the relay or the on-commit publisher, the scheduler and a worker, carried by the
``traceparent`` header of every message and recorded in every event of the job; with tracing
off (the default) no message carries a header and no event a trace. The services' JSON log
lines name the job and its trace, and never carry its payload or the API key."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from contracts.names import Topology
from shared.domain import Job, Status
from shared.eventstore import JobStore
from shared.settings import StoreSettings
from tests.e2e.helpers import assert_legal_history, settle
from tests.processes import System, free_port, system_env
from tests.services import forget_prefix, fresh_database

pytestmark = pytest.mark.e2e

SERVICES = ("projector", "scheduler", "worker", "submitter")
PAYLOAD_SECRET = "PAYLOAD-SECRET-7f3a9c"


@pytest.fixture(scope="module", params=["relay", "on-commit"])
def traced(
    request: pytest.FixtureRequest,
    postgres_server: str,
    amqp_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[System, JobStore, Path]]:
    """The four services with tracing on (the console exporter writing JSON lines to a file),
    JSON logs at DEBUG, on a database, topology and Redis prefix of their own. ``relay``: the
    writers do not publish on commit, the projector's relay publishes everything."""
    prefix = f"jt-trace-{uuid.uuid4().hex[:6]}"
    with fresh_database(postgres_server, "trace") as url:
        log_dir: Path = tmp_path_factory.mktemp(f"trace-{request.param}")
        spans = log_dir / "spans.jsonl"
        port = free_port()
        env = system_env(url, amqp_url, redis_url, prefix, port) | {
            "OTEL_TRACES_EXPORTER": "console",
            "JOBTRAIL_TRACES_FILE": str(spans),
            "JOBTRAIL_LOG_FORMAT": "json",
            "JOBTRAIL_LOG_LEVEL": "DEBUG",
            "JOBTRAIL_PUBLISH_ON_COMMIT": "false" if request.param == "relay" else "true",
        }
        running = System(env, log_dir, port)
        store = JobStore(StoreSettings(postgres_url=url))
        try:
            running.start(SERVICES)
            running.wait_ready()
            yield running, store, spans
        finally:
            running.stop()
            store.close()
            print(running.logs())
            forget_prefix(amqp_url, redis_url, prefix)


class Capture:
    """A queue of the test's own bound to every job event of a topology: what was sent, with
    its headers."""

    def __init__(self, amqp_url: str, prefix: str) -> None:
        self.amqp_url, self.name = amqp_url, f"{prefix}.test-capture-{uuid.uuid4().hex[:6]}"
        self.exchange = Topology(prefix).events_exchange

    def __enter__(self) -> Capture:
        async def declare() -> None:
            connection = await aio_pika.connect(self.amqp_url)
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(self.name, auto_delete=False)
                await queue.bind(self.exchange, "job.#")

        asyncio.run(declare())
        return self

    def messages(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(body, headers) of every message captured so far."""

        async def drain() -> list[tuple[dict[str, Any], dict[str, Any]]]:
            connection = await aio_pika.connect(self.amqp_url)
            out = []
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(self.name, passive=True)
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    out.append((json.loads(message.body), dict(message.headers or {})))
            return out

        return asyncio.run(drain())

    def __exit__(self, *exc: object) -> None:
        async def delete() -> None:
            connection = await aio_pika.connect(self.amqp_url)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(self.name)

        asyncio.run(delete())


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hex_id(value: str) -> str:
    return value.removeprefix("0x")


def test_one_job_makes_one_trace_across_the_four_services(
    traced: tuple[System, JobStore, Path], amqp_url: str, request: pytest.FixtureRequest
) -> None:
    system, store, spans_file = traced
    mode = request.node.callspec.params["traced"]
    prefix = system.env["JOBTRAIL_TOPOLOGY_PREFIX"]
    # Given a delayed job that fails its first attempt (a timer, a retry, two attempts)
    run_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    job = {"type": "test.flaky", "payload": {"fail_times": 1}, "run_at": run_at}
    with Capture(amqp_url, prefix) as capture, system.client() as http:
        # When it is submitted over HTTP and runs to the end
        response = http.post("/v1/jobs", json=job)
        assert response.status_code == 202, response.text
        job_id = uuid.UUID(response.json()["id"])
        assert settle(store, [job_id], timeout=60)[job_id].status == Status.COMPLETED
        history = http.get(f"/v1/jobs/{job_id}/events").json()
        messages = [(b, h) for b, h in capture.messages() if b["data"]["job_id"] == str(job_id)]

    # Then every event of the job names one trace, and so does its history in the API
    events = assert_legal_history(store, job_id)
    trace_ids = {e.trace_id for e in events}
    assert len(trace_ids) == 1 and None not in trace_ids, trace_ids
    (trace_id,) = trace_ids
    assert {line["trace_id"] for line in history} == {trace_id}
    assert [type(e) for e in events if e.span_id is None] == []
    # and every message about it carried that trace in its traceparent header
    assert len(messages) >= 3  # Scheduled, AttemptFailed, Scheduled
    for _body, headers in messages:
        assert headers["traceparent"].split("-")[1] == trace_id, headers

    # and the spans of the four processes (exported per process) form that one trace
    def of_trace() -> list[dict[str, Any]]:
        return [s for s in read_spans(spans_file) if hex_id(s["context"]["trace_id"]) == trace_id]

    spans = of_trace()
    by_service: dict[str, set[str]] = {}
    for span in spans:
        service = span["resource"]["attributes"]["jobtrail.service"]
        by_service.setdefault(service, set()).add(span["name"])
    assert by_service["submitter"] >= {"POST /v1/jobs"}, by_service
    assert {"scheduler dispatch"} <= by_service["scheduler"], by_service
    assert {"worker run", "worker record outcome"} <= by_service["worker"], by_service
    publishers = {n for names in by_service.values() for n in names if n.startswith("publisher")}
    if mode == "relay":
        assert "relay job.scheduled.default" in by_service["projector"], by_service
    else:
        assert "publisher job.scheduled.default" in publishers, by_service
    # one tree: every parent is a span of the trace, and there is one root (the request)
    ids = {hex_id(s["context"]["span_id"]) for s in spans}
    roots = [s for s in spans if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["POST /v1/jobs"]
    assert all(hex_id(s["parent_id"]) in ids for s in spans if s["parent_id"]), spans
    # each event's span is one of the trace's, and the outcome's is the worker's record span
    names = {hex_id(s["context"]["span_id"]): s["name"] for s in spans}
    assert all(e.span_id in names for e in events)
    completed = next(e for e in events if isinstance(e, Job.Completed))
    assert names[str(completed.span_id)] == "worker record outcome"


def test_json_logs_name_the_job_and_trace_and_never_its_payload_or_key(
    traced: tuple[System, JobStore, Path],
) -> None:
    system, store, _ = traced
    # Given a job whose payload looks like a secret, submitted with the system's API key
    job = {"type": "cpu.hash", "payload": {"text": PAYLOAD_SECRET, "rounds": 1}}
    with system.client() as http:
        response = http.post("/v1/jobs", json=job)
        assert response.status_code == 202, response.text
    job_id = uuid.UUID(response.json()["id"])
    # When it has run
    assert settle(store, [job_id], timeout=60)[job_id].status == Status.COMPLETED
    trace_id = store.history(job_id)[-1].trace_id
    system.stop()  # every line written
    # Then every line of every service is a JSON object naming its service and instance
    lines: list[dict[str, Any]] = []
    for name, service in system.services.items():
        text = service.log_path.read_text()
        # and neither the payload nor the key appears anywhere
        assert PAYLOAD_SECRET not in text, name
        assert system.api_key and system.api_key not in text, name
        for raw in text.splitlines():
            line = json.loads(raw)
            assert line["service"] == name and line["instance"].startswith(name), line
            lines.append(line)
    # and the worker's lines about the job name it, its correlation id and its trace
    about = [line for line in lines if line.get("job_id") == str(job_id)]
    assert about, "no log line names the job"
    assert all(line["trace_id"] == trace_id and line["correlation_id"] for line in about), about


def test_with_tracing_off_no_header_is_sent_and_no_trace_stored(
    system: System, log_store: JobStore, amqp_url: str
) -> None:
    # Given the services as they start by default (no OTEL_TRACES_EXPORTER)
    assert not any(k.startswith("OTEL_") for k in system.env)
    prefix = system.env["JOBTRAIL_TOPOLOGY_PREFIX"]
    job = {"type": "test.flaky", "payload": {"fail_times": 1}}
    with Capture(amqp_url, prefix) as capture, system.client() as http:
        # When a job that is retried once runs to the end, with a traceparent on the request
        parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        response = http.post("/v1/jobs", json=job, headers={"traceparent": parent})
        assert response.status_code == 202, response.text
        job_id = uuid.UUID(response.json()["id"])
        assert settle(log_store, [job_id], timeout=60)[job_id].status == Status.COMPLETED
        history = http.get(f"/v1/jobs/{job_id}/events").json()
        messages = [(b, h) for b, h in capture.messages() if b["data"]["job_id"] == str(job_id)]
    # Then no message about it carried a traceparent, and no event or history line a trace
    assert len(messages) >= 3
    assert [h for _, h in messages if "traceparent" in h] == []
    events = log_store.history(job_id)
    assert [e for e in events if e.trace_id is not None or "trace_id" in vars(e)] == []
    assert {line["trace_id"] for line in history} == {None}
