"""Values that could poison the log are refused at the door; a poison event that is in the log
anyway is quarantined and the jobs behind it run; an unstorable result ends its job FAILED."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from shared.domain import Job, Status
from shared.eventstore import JobStore
from tests.e2e.helpers import assert_legal_history, settle, wait_for
from tests.jobs import CAUSE, unchecked_cause
from tests.processes import System

pytestmark = pytest.mark.e2e

LATER = (datetime.now(UTC) + timedelta(days=1)).isoformat()
"""A run_at well inside the accepted range: the job waits until a test cancels it."""
JOB = {"type": "cpu.hash", "payload": {"text": "x"}}


@pytest.mark.parametrize(
    ("headers", "body", "field"),
    [
        ({"X-Request-Id": "r" * 129}, JOB, "header.X-Request-Id"),
        ({"X-Correlation-Id": "c" * 5000}, JOB, "header.X-Correlation-Id"),
        ({"X-Request-Id": "caf\xe9".encode("latin-1")}, JOB, "header.X-Request-Id"),
        ({}, '{"type":"cpu.hash","payload":{"text":"\\ud800"}}', "payload"),
        ({}, '{"type":"cpu.hash","payload":{"text":"x"},"idempotency_key":"k\\udfff"}', "idem"),
        ({}, '{"type":"cpu.hash","payload":{"\\ud800":"x"}}', "payload"),
    ],
)
def test_values_a_message_could_not_carry_are_refused_naming_the_field(
    system: System,
    log_store: JobStore,
    headers: dict[str, str | bytes],
    body: dict[str, object] | str,
    field: str,
) -> None:
    # Given the head of the log
    head = log_store.max_notification_id()
    # When a request carries an id the bus could not carry, or text that is not valid Unicode
    content = body if isinstance(body, str) else json.dumps(body)
    sent = headers | {"Content-Type": "application/json"}
    response = httpx.post(
        f"{system.base_url}/v1/jobs", content=content, headers=sent | system.headers
    )
    # Then it is refused with a 4xx naming the field, and nothing is written
    assert response.status_code == 422, response.text
    assert any(e["field"].startswith(field) for e in response.json()["errors"]), response.text
    assert log_store.max_notification_id() == head


def test_a_cancel_reason_that_is_not_valid_unicode_is_refused(system: System) -> None:
    with system.client(timeout=30) as http:
        job_id = http.post("/v1/jobs", json=JOB | {"run_at": LATER}).json()["id"]
        response = http.post(
            f"/v1/jobs/{job_id}/cancel",
            content='{"reason":"\\ud800"}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422 and "reason" in response.text
        assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202


@pytest.mark.parametrize("fail", [False, True], ids=["result", "error"])
def test_a_job_whose_outcome_cannot_be_stored_ends_failed_saying_why(
    system: System, log_store: JobStore, fail: bool
) -> None:
    # Given a job that names a file as os.listdir does on a non-UTF-8 file system
    job = {"type": "test.listing", "payload": {"fail": fail}}
    response = httpx.post(f"{system.base_url}/v1/jobs", json=job, headers=system.headers)
    job_id = uuid.UUID(response.json()["id"])
    # When a worker runs it, Then it ends FAILED, once, with the reason, and is not run again
    final = settle(log_store, [job_id], timeout=60)[job_id]
    assert final.status is Status.FAILED and final.error is not None
    assert final.error["type"] == "UnstorableResult", final.error
    assert "\\udcff" in final.error["message"]
    events = assert_legal_history(log_store, job_id)
    assert len([e for e in events if isinstance(e, Job.Started)]) == 1


def test_a_poison_event_in_the_log_is_quarantined_and_the_jobs_behind_it_run(
    system: System, log_store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Scheduled event (a kind the relay publishes) whose causation id the envelope
    # refuses, written around the checks
    poison = uuid.uuid4()

    def submit_with_poison(_: Job | None) -> Job:
        job = Job.submit(CAUSE, job_type="cpu.hash", payload={"text": "p"}, job_id=poison)
        job.schedule(unchecked_cause(causation_id="r" * 129))
        return job

    log_store.execute(poison, submit_with_poison)
    # When normal jobs are submitted behind it
    with system.client(timeout=30) as http:
        ids = [uuid.UUID(http.post("/v1/jobs", json=JOB).json()["id"]) for _ in range(30)]

        # Then they all complete, and the poison job is FAILED, saying why
        final = settle(log_store, [*ids, poison], timeout=90)
        assert all(final[job_id].status is Status.COMPLETED for job_id in ids)
        assert final[poison].status is Status.FAILED
        assert isinstance(assert_legal_history(log_store, poison)[-1], Job.Quarantined)

        # And the quarantine is visible over HTTP and through the CLI
        rows = wait_for(
            lambda: http.get("/v1/quarantine", params={"job_id": str(poison)}).json(),
            10,
            "the quarantine record",
        )
        assert [(r["stage"], r["action"], r["version"]) for r in rows] == [
            ("relay", "job_failed", 2)
        ]
        assert "causation_id" in rows[0]["error"]
        assert datetime.fromisoformat(rows[0]["at"]) <= datetime.now(UTC)

    from typer.testing import CliRunner

    from services.cli.app import app

    monkeypatch.setenv("JOBTRAIL_API_URL", system.base_url)
    monkeypatch.setenv("JOBTRAIL_API_KEY", system.api_key)
    result = CliRunner().invoke(app, ["dlq", "quarantined", "--job", str(poison)])
    assert result.exit_code == 0 and "1 quarantined event(s)" in result.output
    assert "relay" in result.output  # the table folds long cells on a narrow terminal
