"""``jobtrail audit`` and ``jobtrail state`` against a real PostgreSQL log (typer's CliRunner)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.application import project_aggregate
from typer.testing import CliRunner

from services.cli.app import app
from shared.domain import Cause
from shared.eventstore import JobStore
from shared.eventstore.export import EventExport, RangeFilter
from shared.views import RECORD_FIELDS, job_view
from tests.jobs import (
    SKEW,
    prefix_at,
    record,
    record_a_retried_job,
    record_a_skewed_job,
    zulu,
)

runner = CliRunner()


@pytest.fixture
def cli(postgres_url: str) -> Any:
    def invoke(*args: str) -> Any:
        env = {"JOBTRAIL_POSTGRES_URL": postgres_url, "COLUMNS": "200"}  # a wide terminal
        return runner.invoke(app, list(args), env=env)

    return invoke


def test_state_at_each_version_and_time_is_the_fold_of_the_history(
    store: JobStore, cli: Any
) -> None:
    # Given a job with seven events
    job_id = record_a_retried_job(store)
    history = store.history(job_id)
    assert len(history) == 7

    for n, event in enumerate(history, start=1):
        expected = job_view(project_aggregate(None, history[:n]))
        # When we ask for it at version n, and at the time of event n (as Z and as +00:00)
        by_version = cli("state", str(job_id), "--version", str(n), "--json")
        by_time = cli("state", str(job_id), "--at", zulu(event.timestamp), "--json")
        by_offset = cli("state", str(job_id), "--at", event.timestamp.isoformat(), "--json")
        # Then each is the fold of its first n events
        assert by_version.exit_code == 0, by_version.output
        assert json.loads(by_version.stdout) == expected
        assert json.loads(by_time.stdout) == expected
        assert json.loads(by_offset.stdout) == expected
    assert json.loads(cli("state", str(job_id), "--json").stdout)["status"] == "COMPLETED"


def test_state_of_a_history_whose_timestamps_go_backwards(store: JobStore, cli: Any) -> None:
    # Given a job whose events a worker 60 s behind stamped earlier than those before them
    start = datetime.now(UTC) - timedelta(hours=1)
    job_id = record_a_skewed_job(store, start)
    history = store.history(job_id)
    tick = timedelta(microseconds=1)

    for at in sorted({e.timestamp + d for e in history for d in (-tick, timedelta(0))}):
        # When its state is asked for at each event's time, and just before it
        result = cli("state", str(job_id), "--at", at.isoformat(), "--json")
        # Then it is the fold of the longest prefix stamped at or before that time, or "did
        # not exist yet" before the Submitted event's time: never a crash
        prefix = prefix_at(history, at)
        if prefix:
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout) == job_view(project_aggregate(None, prefix))
        else:
            assert result.exit_code == 1, result.output
            assert "did not exist yet" in result.output
    assert [e.timestamp - start for e in history] == list(SKEW)


def test_audit_of_one_job_as_table_jsonl_and_csv(store: JobStore, cli: Any, tmp_path: Any) -> None:
    # Given a job that failed once, then completed
    job_id = record_a_retried_job(store)
    names = [type(e).__name__ for e in store.history(job_id)]

    # When its history is shown and exported
    table = cli("audit", str(job_id))
    jsonl = cli("audit", str(job_id), "--format", "jsonl")
    target = tmp_path / "history.csv"
    to_file = cli("audit", str(job_id), "--format", "csv", "--output", str(target))

    # Then the table names every event, the attempt, the worker and the error
    assert table.exit_code == 0, table.output
    for text in ("AttemptFailed", "Completed", "w2", "ValueError: bad input row 7"):
        assert text in table.stdout
    # And the JSON lines are one record per event, in version order, from the one record builder
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert records == EventExport(store).job_records(job_id)
    assert [r["event_type"] for r in records] == names
    assert [r["version"] for r in records] == list(range(1, 8))
    failed = records[3]
    assert (failed["attempt"], failed["worker"], failed["error_type"]) == (1, "w1", "ValueError")
    assert failed["data"]["retry_at"].endswith("+00:00")
    # And the CSV has the documented header and the same rows
    assert to_file.exit_code == 0, to_file.output
    assert "exported 7 event(s)" in to_file.stderr
    with target.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == RECORD_FIELDS
    assert [r["event_type"] for r in rows] == names
    assert json.loads(rows[-1]["data"])["result"] == {"rows": 7}


def test_range_export_is_since_inclusive_until_exclusive_in_commit_order(
    store: JobStore, cli: Any
) -> None:
    # Given a job with seven events (other tests' events may share the time range)
    job_id = record_a_retried_job(store)
    history = store.history(job_id)

    # When events from the time of its 2nd event until the time of its 6th are exported
    since, until = zulu(history[1].timestamp), zulu(history[5].timestamp)
    result = cli("audit", "--since", since, "--until", until)

    # Then its versions 2..5 are in, the 6th (at until) is not; every record is in the range
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    ours = [r["version"] for r in records if r["job_id"] == str(job_id)]
    assert ours == [2, 3, 4, 5]
    since, until = history[1].timestamp, history[5].timestamp
    assert all(since.isoformat() <= r["timestamp"] < until.isoformat() for r in records)
    ids = [r["notification_id"] for r in records]
    assert ids == sorted(ids)


def test_range_export_filters_by_type_and_actor_as_csv(store: JobStore, cli: Any) -> None:
    # Given two jobs written by an actor of this test and one by another actor
    actor = f"api:auditor-{uuid.uuid4().hex[:8]}"
    cause = Cause(actor=actor, correlation_id="corr-audit")
    mine = {record_a_retried_job(store, cause), record_a_retried_job(store, cause)}
    record_a_retried_job(store)
    since = store.history(min(mine))[0].timestamp - timedelta(minutes=1)

    # When events of two types by that actor are exported as CSV
    result = cli(
        "audit",
        "--since",
        since.isoformat(),
        "--type",
        "Started",
        "--type",
        "AttemptFailed",
        "--actor",
        actor,
        "--format",
        "csv",
    )

    # Then exactly those events come out: 2 jobs x (2 Started + 1 AttemptFailed)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["job_id"] for r in rows} == {str(j) for j in mine}
    assert sorted(r["event_type"] for r in rows) == ["AttemptFailed"] * 2 + ["Started"] * 4
    assert {r["actor"] for r in rows} == {actor}


def test_range_pages_join_into_the_same_stream(store: JobStore) -> None:
    # Given some jobs by one actor
    actor = f"api:pager-{uuid.uuid4().hex[:8]}"
    cause = Cause(actor=actor, correlation_id="corr-page")
    for _ in range(3):
        record_a_retried_job(store, cause)
    export = EventExport(store)
    where = RangeFilter(actor=actor)

    # When the range is read in pages of 2 and in one page
    # Then the records are the same, once each
    small = list(export.range_records(where, page=2))
    assert len(small) == 21
    assert small == list(export.range_records(where))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["state", "{job}", "--at", "2026-01-01T00:00:00"], "has no time zone"),
        (["state", "{job}", "--at", "yesterday"], "is not an ISO 8601 time"),
        (["state", "{job}", "--at", "2026-01-01T00:00:00Z", "--version", "2"], "not both"),
        (["state", "{job}", "--version", "0"], "versions start at 1"),
        (["state", "not-a-uuid"], "is not a job id"),
        (["audit", "{job}", "--since", "2026-01-01T00:00:00Z"], "not both"),
        (["audit"], "give a JOB, or a range"),
        (["audit", "--since", "2026-01-01T00:00:00Z", "--type", "Exploded"], "--type Exploded"),
        (["audit", "--since", "2026-01-01T00:00:00Z", "--format", "table"], "--format table"),
        (["audit", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00Z"], "before"),
        (["audit", "--until", "2026-01-01"], "has no time zone"),
    ],
)
def test_bad_input_gets_a_message_saying_what_to_fix(
    store: JobStore, cli: Any, args: list[str], message: str
) -> None:
    job_id = str(record_a_retried_job(store))
    result = cli(*(a.replace("{job}", job_id) for a in args))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_missing_jobs_and_states_are_named(store: JobStore, cli: Any) -> None:
    # Given a job, and an id no job has
    job_id = record_a_retried_job(store)
    created = store.history(job_id)[0].timestamp
    unknown = str(uuid.uuid4())

    # When asked for a time before it existed, a version past its last, or an unknown job
    before = cli("state", str(job_id), "--at", (created - timedelta(seconds=1)).isoformat())
    beyond = cli("state", str(job_id), "--version", "8")
    missing = [
        cli("state", unknown),
        cli("audit", unknown),
        cli("state", unknown, "--version", "1"),
    ]

    # Then each says so, with exit code 1 and no traceback
    assert before.exit_code == 1
    assert "did not exist yet" in " ".join(before.stderr.split())
    assert "has 7 version(s); there is no version 8" in " ".join(beyond.stderr.split())
    for result in missing:
        assert result.exit_code == 1
        assert f"job {unknown} not found" in " ".join(result.stderr.split())


def test_a_formula_in_a_cancel_reason_comes_out_of_csv_inert(store: JobStore, cli: Any) -> None:
    # Given a job cancelled with a reason a spreadsheet would evaluate as a live link
    formula = '=HYPERLINK("http://x","y")'
    cause = Cause(actor="api:mallory", correlation_id="corr-formula", reason=formula)
    job_id = record(store, [lambda j: j.request_cancel(cause)])

    # When its history is exported as CSV and as JSON lines
    as_csv = cli("audit", str(job_id), "--format", "csv")
    as_jsonl = cli("audit", str(job_id), "--format", "jsonl")

    # Then the CSV cell starts with a quote (text, not a formula); the JSON keeps it verbatim
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows[-1]["event_type"] == "Cancelled"  # a pending job is cancelled at once
    assert rows[-1]["reason"] == "'" + formula
    assert rows[-1]["actor"] == "api:mallory"
    records = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert records[-1]["reason"] == formula
