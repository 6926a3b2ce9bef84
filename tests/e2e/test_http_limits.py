"""Bad input against the real submitter process: oversized heads over raw sockets (the limits
live in the server, not in the app), method and media type errors, a SubmitJob message whose
run_at is out of range, and point-in-time reads of a history whose timestamps go backwards."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import dead_letters
from shared.domain import job_id_for_key
from shared.domain.errors import JobNotFoundError
from shared.eventstore import JobStore
from shared.messaging import Routes
from shared.settings import BusSettings
from tests.e2e.helpers import wait_for
from tests.jobs import prefix_at, record_a_skewed_job, zulu
from tests.processes import System

pytestmark = pytest.mark.e2e


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends ``request`` on a fresh TCP connection and reads the answer until the server closes:
    the status, the headers, the body. A reset raises ConnectionResetError."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(
            b"GET /v1/jobs?x=" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
            414,
            id="a 200 KB URL",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 1_000_000 + b"\r\n\r\n",
            431,
            id="a 1 MB header",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 1000) for i in range(40))
            + b"\r\n",
            431,
            id="forty 1 KB headers",
        ),
    ],
)
def test_an_oversized_head_answers_its_status_not_a_reset(
    system: System, request_bytes: bytes, status: int
) -> None:
    # When a request whose URL or headers are far over the server's limit is sent
    answered, headers, body = exchange(system.port, request_bytes)

    # Then the server answers with the status that names the problem, as a problem document
    assert answered == status, body
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status and "16384 bytes" in problem["detail"]
    # And it still serves the next client
    assert (
        exchange(system.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")[0]
        == 200
    )


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(b"GET /v1/jobs?x=" + b"a" * 100_000, 414, id="a URL that never ends"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 100_000,
            431,
            id="a header that never ends",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 1000) for i in range(40)),
            431,
            id="headers that never end",
        ),
    ],
)
def test_a_head_still_incomplete_past_the_limit_is_answered_at_once(
    system: System, head: bytes, status: int
) -> None:
    # When a client sends an oversized head and no end to it (nothing is parsed whole)
    # Then the server answers without waiting for the rest, instead of buffering all it gets
    answered, headers, body = exchange(system.port, head)
    assert answered == status, body
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == status


def test_a_request_that_is_not_http_answers_400_as_a_problem_document(system: System) -> None:
    malformed = b"GET /healthz HTTP/1.1\r\nHost: t\r\nno colon in this header\r\n\r\n"
    status, headers, body = exchange(system.port, malformed)
    assert status == 400 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 400


def test_a_head_within_the_limit_is_served(system: System) -> None:
    target = f"/v1/jobs/{uuid.uuid4()}?pad={'p' * 10_000}".encode()
    auth = f"Authorization: Bearer {system.api_key}\r\n".encode()
    request = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + auth + b"Connection: close\r\n\r\n"
    assert exchange(system.port, request)[0] == 404  # an unknown job, read normally


def test_method_and_media_type_errors_through_the_real_server(system: System) -> None:
    with system.client(timeout=10) as http:
        wrong_method = http.delete("/v1/jobs")
        form = http.post("/v1/jobs", data={"type": "cpu.hash"})
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, POST"
    assert form.status_code == 415 and form.json()["expected"] == "application/json"


def test_a_submit_message_with_run_at_out_of_range_is_dead_lettered_naming_run_at(
    system: System, log_store: JobStore, amqp_url: str
) -> None:
    # Given a SubmitJob message due in the year 9999 (in UTC: 10000)
    key = f"far-{uuid.uuid4()}"
    message_id = f"m-{uuid.uuid4()}"
    body: dict[str, Any] = {
        "correlation_id": "bus-far",
        "data": {
            "type": "cpu.hash",
            "payload": {"text": "x"},
            "run_at": "9999-12-31T23:59:59-14:00",
            "idempotency_key": key,
        },
    }
    routes = Routes.from_settings(
        BusSettings(topology_prefix=system.env["JOBTRAIL_TOPOLOGY_PREFIX"])
    )

    async def publish() -> None:
        from faststream.rabbit import RabbitBroker

        async with RabbitBroker(amqp_url) as broker:
            await broker.publish(
                json.dumps(body).encode(),
                exchange=routes.commands,
                routing_key="job.submit",
                persist=True,
                content_type="application/json",
                message_id=message_id,
            )

    # When it is published
    asyncio.run(publish())

    # Then it is rejected to the dead-letter queue and recorded as invalid, naming run_at
    def recorded() -> dict[str, Any] | None:
        rows = dead_letters.recorded(log_store, None, 100)
        return next((row for row in rows if row["message_id"] == message_id), None)

    letter = wait_for(recorded, 20, "the dead letter of the far-future SubmitJob")
    assert letter["reason"] == "invalid"
    assert "run_at" in letter["error"] and "366 days ahead" in letter["error"]
    # And no job was written
    with pytest.raises(JobNotFoundError):
        log_store.get(job_id_for_key(key))


def test_point_in_time_reads_of_a_skewed_history_through_the_real_server(
    system: System, log_store: JobStore
) -> None:
    # Given a history in the services' log whose timestamps go backwards (a worker 60 s behind)
    start = datetime.now(UTC) - timedelta(hours=1)
    job_id = record_a_skewed_job(log_store, start)
    history = log_store.history(job_id)
    tick = timedelta(microseconds=1)

    with system.client(timeout=10) as http:
        for at in sorted({e.timestamp + d for e in history for d in (-tick, timedelta(0))}):
            # When the server is asked for the job at each event's time and just before it
            response = http.get(f"/v1/jobs/{job_id}", params={"at": zulu(at)})
            # Then it answers: the longest prefix stamped by then, or 404 before the submission
            expected = len(prefix_at(history, at))
            if expected:
                assert response.status_code == 200, (at, response.text)
                assert response.json()["version"] == expected
            else:
                assert response.status_code == 404, (at, response.text)
