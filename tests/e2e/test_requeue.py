"""An operator requeues a FAILED job with ``jobtrail requeue``; the real services run it again."""

from __future__ import annotations

import uuid

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from shared.domain import Job, Status
from shared.eventstore import JobStore
from tests.api import actor_of
from tests.e2e.helpers import assert_legal_history, settle
from tests.processes import System

pytestmark = pytest.mark.e2e


def test_a_failed_job_requeued_from_the_cli_runs_again_and_completes(
    system: System, log_store: JobStore
) -> None:
    # Given a job that FAILED on its only attempt (it fails once, then would succeed)
    with system.client(timeout=10) as http:
        answer = http.post(
            "/v1/jobs",
            json={"type": "test.flaky", "payload": {"fail_times": 1}, "max_attempts": 1},
        )
    job_id = uuid.UUID(answer.json()["id"])
    assert settle(log_store, [job_id], timeout=30)[job_id].status is Status.FAILED

    # When an operator requeues it from the CLI with two more attempts
    env = {"JOBTRAIL_API_URL": system.base_url, "JOBTRAIL_API_KEY": system.api_key}
    cli = CliRunner()
    result = cli.invoke(
        app, ["requeue", str(job_id), "--reason", "upstream fixed", "--attempts", "2"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "PENDING" in result.output

    # Then it runs again and completes on its second attempt
    job = settle(log_store, [job_id], timeout=30)[job_id]
    assert job.status is Status.COMPLETED and job.result == {"succeeded_on_attempt": 2}
    history = assert_legal_history(log_store, job_id)
    assert [type(e).__name__ for e in history] == [
        "Submitted",
        "Scheduled",
        "Started",
        "Failed",
        "Requeued",
        "Scheduled",
        "Started",
        "Completed",
    ]
    requeued = history[4]
    assert isinstance(requeued, Job.Requeued)
    assert (requeued.actor, requeued.reason, requeued.extra_attempts) == (
        actor_of(system.headers),
        "upstream fixed",
        2,
    )
    # And a completed job cannot be requeued: the CLI says why and fails, nothing is recorded
    again = cli.invoke(app, ["requeue", str(job_id), "--reason", "once more"], env=env)
    assert again.exit_code == 1
    assert "409" in again.output
    assert len(log_store.history(job_id)) == len(history)
    # And without a reason the CLI refuses before asking the API
    bare = cli.invoke(app, ["requeue", str(job_id)], env=env)
    assert bare.exit_code == 2 and "--reason" in bare.output
