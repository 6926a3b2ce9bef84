"""Tamper evidence on real PostgreSQL: every kind of change made behind jobtrail's back is caught.

Each test builds a small log in its own database, writes a checkpoint (and its file copy), then
changes rows the way an attacker with the owner's rights would (through the documented
maintenance switch, which is what disabling the trigger amounts to) and runs ``verify_log``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import ProgrammingError
from psycopg.rows import dict_row

from shared.domain import Job
from shared.eventstore import Command, JobStore, archive, checkpoints, existing, schema, verify
from shared.eventstore.chain import GENESIS, event_hash, head_hash, sign
from shared.settings import StoreSettings
from tests.jobs import CAUSE, NO_JITTER, Step, record
from tests.services import fresh_database

KEY = b"kept-by-the-auditor"


@contextmanager
def role(log: Log, *, read_only: bool = False) -> Iterator[str]:
    """A login role granted by ``schema.grant``; yields the URL that connects as it."""
    name = f"jobtrail_role_{uuid.uuid4().hex[:8]}"
    log.sql(f'CREATE ROLE "{name}" LOGIN', maintenance=False)
    try:
        with psycopg.connect(log.url, autocommit=True, row_factory=dict_row) as owner:
            schema.grant(owner, name, read_only=read_only)
        yield log.url.replace("postgres@", f"{name}@")
    finally:
        log.sql(f'DROP OWNED BY "{name}"', maintenance=False)
        log.sql(f'DROP ROLE "{name}"', maintenance=False)


@dataclass
class Log:
    url: str
    store: JobStore
    jobs: list[uuid.UUID]
    checkpoint_file: Path

    def sql(self, query: str, params: Any = (), *, maintenance: bool = True) -> list[Any]:
        with psycopg.connect(self.url, row_factory=dict_row) as conn, conn.transaction():
            if maintenance:
                conn.execute("SET LOCAL jobtrail.maintenance = 'on'")
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def checkpoint(self) -> checkpoints.Checkpoint | None:
        with psycopg.connect(self.url, row_factory=dict_row, autocommit=True) as conn:
            return checkpoints.write_checkpoint(conn, key=KEY, file=self.checkpoint_file)

    def verify(self, **kwargs: Any) -> verify.Report:
        return verify.verify_log(self.url, key=KEY, checkpoint_file=self.checkpoint_file, **kwargs)

    def row(self, job: uuid.UUID, version: int) -> dict[str, Any]:
        rows = self.sql(
            "SELECT * FROM jobtrail_events WHERE originator_id = %s AND originator_version = %s",
            [job, version],
        )
        return dict(rows[0])


def _lifecycle() -> list[Command]:
    """Schedule, start, complete: one command per step, on a job that exists."""
    now = datetime.now(UTC)
    return [
        existing(lambda job: job.schedule(CAUSE, now)),
        existing(lambda job: job.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=now)),
        existing(lambda job: job.complete(CAUSE, worker_id="w1", attempt=1, result={"n": 1})),
    ]


@pytest.fixture
def log(postgres_server: str, tmp_path: Path) -> Iterator[Log]:
    with fresh_database(postgres_server, "integrity") as url:
        store = JobStore(StoreSettings(postgres_url=url))
        jobs = [uuid.uuid4() for _ in range(6)]
        # jobs interleave in the log: each batch moves every job one step
        store.execute_batch(
            [
                (j, lambda _, j=j: Job.submit(CAUSE, job_type="t", payload={"i": 1}, job_id=j))
                for j in jobs
            ]
        )
        steps = _lifecycle()
        for step in range(3):  # four jobs complete; the last two are only scheduled
            store.execute_batch(
                [(j, steps[step]) for j in jobs[:4]]
                + ([(j, steps[0]) for j in jobs[4:]] if step == 0 else [])
            )
        try:
            yield Log(url, store, jobs, tmp_path / "checkpoints.jsonl")
        finally:
            store.close()


def kinds(report: verify.Report) -> list[str]:
    return [p.kind for p in report.problems]


def test_a_clean_log_verifies_against_its_checkpoints(log: Log) -> None:
    assert log.checkpoint() is not None
    log.store.execute(log.jobs[4], _lifecycle()[1])  # starts
    assert log.checkpoint() is not None
    assert log.checkpoint() is None  # nothing new
    report = log.verify()
    assert report.ok, report.problems
    assert (report.jobs, report.events, report.checkpoints) == (6, 6 + 4 * 3 + 2 + 1, 4)


def test_every_stored_hash_is_the_chain_recomputed(log: Log) -> None:
    rows = log.sql(
        "SELECT * FROM jobtrail_events WHERE originator_id = %s ORDER BY originator_version",
        [log.jobs[0]],
        maintenance=False,
    )
    assert len(rows) == 4
    previous = GENESIS
    for r in rows:
        previous = event_hash(
            previous, r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"])
        )
        assert bytes(r["chain_hash"]) == previous


def test_an_edited_row_is_named(log: Log) -> None:
    log.checkpoint()
    job = log.jobs[1]
    log.sql(
        "UPDATE jobtrail_events SET state = "
        "convert_to(replace(convert_from(state, 'UTF8'), 'w1', 'w2'), 'UTF8') "
        "WHERE originator_id = %s AND originator_version = 3",
        [job],
    )
    report = log.verify()
    assert not report.ok
    first = report.problems[0]
    assert (first.kind, first.job_id, first.version) == ("hash", job, 3)
    assert "checkpoint" not in kinds(report)  # the chain hash column itself was left alone


def test_an_edit_with_the_chain_recomputed_is_caught_by_the_checkpoints(log: Log) -> None:
    log.checkpoint()
    job = log.jobs[2]
    rows = log.sql(
        "SELECT * FROM jobtrail_events WHERE originator_id = %s ORDER BY originator_version",
        [job],
    )
    previous = GENESIS
    for r in rows:  # the attacker edits version 3 (Started) and rehashes the chain from there
        state = (
            bytes(r["state"]).replace(b"w1", b"w9") if r["originator_version"] == 3 else r["state"]
        )
        previous = event_hash(previous, job, r["originator_version"], r["topic"], bytes(state))
        log.sql(
            "UPDATE jobtrail_events SET state = %s, chain_hash = %s WHERE notification_id = %s",
            [bytes(state), previous, r["notification_id"]],
        )
    report = log.verify()
    assert kinds(report) == ["checkpoint", "checkpoint"]  # the database and the file copy
    assert "edited, deleted, inserted or reordered" in report.problems[0].detail


def test_a_deleted_row_is_named(log: Log) -> None:
    log.checkpoint()
    job = log.jobs[0]
    log.sql(
        "DELETE FROM jobtrail_events WHERE originator_id = %s AND originator_version = 2", [job]
    )
    report = log.verify()
    first = report.problems[0]
    assert (first.kind, first.job_id, first.version) == ("gap", job, 2)
    assert "checkpoint" in kinds(report)


def test_a_deleted_last_event_is_caught_by_the_checkpoints(log: Log) -> None:
    log.checkpoint()
    last = log.row(log.jobs[3], 4)["notification_id"]
    log.sql(
        "DELETE FROM jobtrail_events WHERE originator_id = %s AND originator_version = 4",
        [log.jobs[3]],
    )
    report = log.verify()
    assert set(kinds(report)) == {"checkpoint"}
    assert "events there now" in report.problems[0].detail
    assert f"absent there (deleted rows, or transactions that rolled back): {last}" in (
        report.problems[0].detail
    )


def test_an_inserted_row_is_named(log: Log) -> None:
    log.checkpoint()
    job = log.jobs[4]  # SCHEDULED at version 2: a forged Started as version 3
    started = log.row(log.jobs[0], 3)
    log.sql(
        "INSERT INTO jobtrail_events (originator_id, originator_version, topic, state) "
        "VALUES (%s, 3, %s, %s)",
        [job, started["topic"], started["state"]],
    )
    report = log.verify()
    first = report.problems[0]
    assert (first.kind, first.job_id, first.version) == ("unchained", job, 3)


def test_an_inserted_row_with_a_forged_chain_is_caught_by_the_checkpoints(log: Log) -> None:
    log.checkpoint()
    job = log.jobs[5]
    last = log.row(job, 2)
    started = log.row(log.jobs[0], 3)
    forged = event_hash(
        bytes(last["chain_hash"]), job, 3, started["topic"], bytes(started["state"])
    )
    log.sql(  # slipped in before the checkpoint, where ids are not used
        "INSERT INTO jobtrail_events (notification_id, originator_id, originator_version, topic, "
        "state, chain_hash) VALUES (0, %s, 3, %s, %s, %s)",
        [job, started["topic"], started["state"], forged],
    )
    report = log.verify()
    assert set(kinds(report)) == {"checkpoint"}


def test_reordered_rows_are_named(log: Log) -> None:
    log.checkpoint()
    job = log.jobs[1]
    two, three = log.row(job, 2), log.row(job, 3)
    for row, other in ((two, three), (three, two)):
        log.sql(
            "UPDATE jobtrail_events SET topic = %s, state = %s, chain_hash = %s "
            "WHERE notification_id = %s",
            [other["topic"], other["state"], other["chain_hash"], row["notification_id"]],
        )
    report = log.verify()
    first = report.problems[0]
    assert (first.kind, first.job_id, first.version) == ("hash", job, 2)


def test_reordered_notifications_are_caught_by_the_checkpoints(log: Log) -> None:
    log.checkpoint()
    a, b = log.row(log.jobs[0], 1), log.row(log.jobs[1], 1)
    log.sql(
        "UPDATE jobtrail_events SET notification_id = CASE notification_id "
        "WHEN %s THEN %s ELSE %s END WHERE notification_id IN (%s, %s)",
        [a["notification_id"], -1, -2, a["notification_id"], b["notification_id"]],
    )
    log.sql(
        "UPDATE jobtrail_events SET notification_id = CASE notification_id "
        "WHEN -1 THEN %s ELSE %s END WHERE notification_id IN (-1, -2)",
        [b["notification_id"], a["notification_id"]],
    )
    report = log.verify()
    assert set(kinds(report)) == {"checkpoint"}  # each job's chain is intact, the order is not


def test_rewritten_database_checkpoints_are_caught_by_the_file_and_the_key(log: Log) -> None:
    log.checkpoint()
    log.sql(
        "DELETE FROM jobtrail_events WHERE originator_id = %s AND originator_version = 4",
        [log.jobs[3]],
    )
    # The attacker recomputes the head and rewrites the stored checkpoint, without the key
    entries = log.sql("SELECT notification_id, chain_hash FROM jobtrail_events ORDER BY 1")
    head = GENESIS
    for e in entries:
        head = head_hash(head, e["notification_id"], bytes(e["chain_hash"]))
    log.sql(
        "UPDATE jobtrail_checkpoints SET head = %s, events = %s, signature = %s",
        [head, len(entries), sign(b"guess", entries[-1]["notification_id"], head)],
    )
    report = log.verify()
    assert "signature" in kinds(report)
    assert any(p.kind == "checkpoint" and "file" in p.detail for p in report.problems)


def test_history_is_append_only_even_for_the_owner(log: Log) -> None:
    log.checkpoint()
    job = log.jobs[0]
    for statement in (
        "UPDATE jobtrail_events SET topic = topic WHERE originator_id = %s",
        "DELETE FROM jobtrail_events WHERE originator_id = %s",
        "UPDATE jobtrail_checkpoints SET events = 0 WHERE %s IS NOT NULL",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            log.sql(statement, [job], maintenance=False)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        log.sql("TRUNCATE jobtrail_events", maintenance=False)
    assert len(log.store.history(job)) == 4


def test_a_service_role_appends_and_reads_but_cannot_change_history(log: Log) -> None:
    log.checkpoint()
    with role(log) as url:
        service = JobStore(StoreSettings(postgres_url=url, postgres_create_schema=False))
        try:
            new = uuid.uuid4()
            service.execute(new, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=new))
            assert service.get(new).version == 1
        finally:
            service.close()
        with psycopg.connect(url) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute("DELETE FROM jobtrail_events")
            conn.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute("UPDATE jobtrail_events SET topic = topic")
            conn.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute("TRUNCATE jobtrail_events")
            conn.rollback()
            conn.execute("SET LOCAL jobtrail.maintenance = 'on'")  # anyone may set it ...
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    "UPDATE jobtrail_events SET topic = topic"
                )  # ... it grants no privilege, and only the owner uses it
    assert log.verify().ok


def test_archived_histories_leave_the_table_and_still_verify(log: Log, tmp_path: Path) -> None:
    log.checkpoint()
    done = archive.archive(
        log.store, datetime.now(UTC) + timedelta(seconds=1), tmp_path / "archive", limit=3
    )
    assert done is not None and (done.jobs, done.events) == (3, 12)
    assert log.sql("SELECT count(*) AS n FROM jobtrail_events")[0]["n"] == 20 - 12
    assert log.verify(archives=[done.data]).ok
    assert "checkpoint" in kinds(log.verify())  # without the archive, rows are missing

    # A changed archive is caught by its manifest digest
    raw = bytearray(done.data.read_bytes())
    raw[-10] ^= 0xFF
    done.data.write_bytes(bytes(raw))
    assert "archive" in kinds(log.verify(archives=[done.data]))


def test_the_cli_verifies_reports_tampering_and_exits_non_zero(
    log: Log, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from services.cli.app import app

    monkeypatch.setenv("JOBTRAIL_POSTGRES_URL", log.url)
    monkeypatch.setenv("JOBTRAIL_CHECKPOINT_FILE", str(log.checkpoint_file))
    monkeypatch.setenv("JOBTRAIL_CHECKPOINT_KEY", KEY.decode())
    cli = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = cli.invoke(app, list(args))
        return result.exit_code, result.output

    code, out = run("checkpoint")
    assert code == 0 and "checkpoint at notification" in out
    code, out = run("verify", "--no-redis")
    assert code == 0 and "log OK" in out

    code, out = run("archive", "--before", "yesterday")
    assert code == 2 and "--before 'yesterday' is not an ISO 8601 time" in out
    code, out = run("archive", "--before", "2099-01-01T00:00:00Z", "--dir", str(tmp_path))
    assert code == 2 and "at least JOBTRAIL_FINAL_TTL_S" in out
    code, out = run("archive", "--before", "2000-01-01T00:00:00Z", "--dir", str(tmp_path))
    assert code == 0 and "no final job finished before" in out
    code, out = run("verify", "--no-redis", "--archive", str(tmp_path / "missing.jsonl.gz"))
    assert code == 2 and "does not exist" in out
    code, out = run("db", "grant", "no_such_role_here")
    assert code == 2 and "does not exist" in out

    job = log.jobs[2]
    log.sql(
        "DELETE FROM jobtrail_events WHERE originator_id = %s AND originator_version = 2", [job]
    )
    code, out = run("verify", "--no-redis")
    assert code == 1
    assert f"job {job} version 2" in out and "TAMPERED" in out

    # A row edited so that it no longer decodes: both checks report it, neither crashes
    monkeypatch.setenv("JOBTRAIL_REDIS_PREFIX", f"jt-verify-{uuid.uuid4().hex[:6]}")
    log.sql(
        "UPDATE jobtrail_events SET state = convert_to('{\"garbage\": 1}', 'UTF8') "
        "WHERE originator_id = %s AND originator_version = 3",
        [log.jobs[0]],
    )
    result = cli.invoke(app, ["verify"])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert f"job {log.jobs[0]} version 3" in result.output
    assert "could not fold the log" in result.output


def test_audit_exports_carry_each_events_chain_hash(log: Log) -> None:
    from shared.eventstore.export import EventExport

    records = EventExport(log.store).job_records(log.jobs[0])
    stored = [bytes(log.row(log.jobs[0], r["version"])["chain_hash"]).hex() for r in records]
    assert [r["chain_hash"] for r in records] == stored and len(stored) == 4


def test_an_auditor_role_reads_and_verifies_but_writes_nothing(log: Log) -> None:
    from shared.eventstore.export import EventExport

    log.checkpoint()
    with role(log, read_only=True) as url:
        assert verify.verify_log(url, key=KEY).ok
        auditor = JobStore(StoreSettings(postgres_url=url, postgres_create_schema=False))
        try:
            assert len(EventExport(auditor).job_records(log.jobs[0])) == 4
            new = uuid.uuid4()
            with pytest.raises(ProgrammingError, match="permission denied"):
                auditor.execute(
                    new, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=new)
                )
        finally:
            auditor.close()


def _failed_then_requeued(store: JobStore) -> uuid.UUID:
    """A job that FAILED (its only attempt) and was requeued by an operator: PENDING again."""
    now = datetime.now(UTC)
    steps: list[Step] = [
        lambda j: j.schedule(CAUSE, now),
        lambda j: j.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=now),
        lambda j: j.fail_attempt(
            CAUSE,
            worker_id="w1",
            attempt=1,
            error_type="E",
            error_message="boom",
            retryable=True,
            now=now,
            backoff=NO_JITTER,
        ),
        lambda j: j.requeue(replace(CAUSE, reason="operator retry")),
    ]
    return record(store, steps, max_attempts=1)


def test_archive_takes_only_final_jobs_covered_by_a_checkpoint(log: Log, tmp_path: Path) -> None:
    requeued = _failed_then_requeued(log.store)  # FAILED once, PENDING again: not final
    later = log.jobs[4]
    log.checkpoint()
    for step in _lifecycle()[1:]:  # completes after the checkpoint
        log.store.execute(later, step)
    done = archive.archive(log.store, datetime.now(UTC) + timedelta(seconds=1), tmp_path, 100)
    assert done is not None and done.jobs == 4  # the four completed before the checkpoint
    assert len(log.store.history(requeued)) == 5 and len(log.store.history(later)) == 4
    log.checkpoint()
    assert log.verify(archives=[done.data]).ok


def test_a_torn_last_checkpoint_line_is_skipped_a_corrupt_one_is_named(log: Log) -> None:
    log.checkpoint()
    with log.checkpoint_file.open("a") as out:
        out.write('{"notification_id": 99, "he')  # a crash while appending
    assert log.verify().ok
    with log.checkpoint_file.open("a") as out:
        out.write("\n" + log.checkpoint_file.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="line 2 is not a checkpoint"):
        log.verify()


def test_a_work_message_is_resent_less_and_less_often(log: Log) -> None:
    from shared.eventstore import tables

    job = log.jobs[5]  # SCHEDULED: it has a dispatch row
    with psycopg.connect(log.url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(
            "UPDATE jobtrail_dispatches SET sent_at = now() - interval '15 seconds' "
            "WHERE job_id = %s",
            [job],
        )
        assert [j for j, _ in tables.overdue_dispatches(conn, 100, 10)] == [job]
        conn.execute(  # resent once: the next resend waits 2 deadlines (20 s), not 10
            "UPDATE jobtrail_dispatches SET sent_at = now() - interval '15 seconds' "
            "WHERE job_id = %s",
            [job],
        )
        assert tables.overdue_dispatches(conn, 100, 10) == []
        conn.execute(
            "UPDATE jobtrail_dispatches SET sent_at = now() - interval '25 seconds' "
            "WHERE job_id = %s",
            [job],
        )
        assert [j for j, _ in tables.overdue_dispatches(conn, 100, 10)] == [job]


def test_an_archived_history_is_still_audited(
    log: Log, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from services.cli.app import app

    before = {
        r["originator_version"]: bytes(r["chain_hash"]).hex()
        for r in log.sql("SELECT * FROM jobtrail_events WHERE originator_id = %s", [log.jobs[0]])
    }
    log.checkpoint()
    done = archive.archive(log.store, datetime.now(UTC) + timedelta(seconds=1), tmp_path, 10)
    assert done is not None
    monkeypatch.setenv("JOBTRAIL_POSTGRES_URL", log.url)
    monkeypatch.setenv("JOBTRAIL_ARCHIVE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["audit", str(log.jobs[0]), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r["version"]: r["chain_hash"] for r in records} == before
    assert [r["event_type"] for r in records] == ["Submitted", "Scheduled", "Started", "Completed"]

    missing = CliRunner().invoke(app, ["audit", str(uuid.uuid4())])
    assert missing.exit_code == 1 and "nor in 1" in " ".join(missing.output.split())


def test_verify_without_any_checkpoint_fails_unless_told_to_allow_it(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from services.cli.app import app

    # Given a consistent log that no checkpoint anchors (none in the table, no file)
    monkeypatch.setenv("JOBTRAIL_POSTGRES_URL", log.url)
    monkeypatch.delenv("JOBTRAIL_CHECKPOINT_FILE", raising=False)
    monkeypatch.setenv("JOBTRAIL_CHECKPOINT_KEY", KEY.decode())
    cli = CliRunner()
    assert verify.verify_log(log.url, key=KEY).checkpoints == 0

    # When it is verified, then with --allow-no-checkpoints
    refused = cli.invoke(app, ["verify", "--no-redis"], env={"COLUMNS": "200"})
    allowed = cli.invoke(
        app, ["verify", "--no-redis", "--allow-no-checkpoints"], env={"COLUMNS": "200"}
    )

    # Then the first fails, saying that nothing anchors the chains; the second passes, warning
    assert refused.exit_code == 1, refused.output
    assert "no checkpoint anchors them" in refused.output
    assert "--allow-no-checkpoints" in refused.output
    assert allowed.exit_code == 0, allowed.output
    assert "NO CHECKPOINT" in allowed.output

    # And once a checkpoint exists, verify passes without the flag
    assert log.checkpoint() is not None
    anchored = cli.invoke(app, ["verify", "--no-redis"], env={"COLUMNS": "200"})
    assert anchored.exit_code == 0 and "log OK" in anchored.output


def _more_events(log: Log) -> None:
    """One more job submitted, so the next checkpoint has something to cover."""
    job = uuid.uuid4()
    log.store.execute(job, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=job))


def _rewrite_job(log: Log, job: uuid.UUID) -> None:
    """The attacker with the owner's rights edits a job's Started row and rehashes its chain."""
    rows = log.sql(
        "SELECT * FROM jobtrail_events WHERE originator_id = %s ORDER BY originator_version",
        [job],
    )
    previous = GENESIS
    for r in rows:
        state = bytes(r["state"]).replace(b"w1", b"w9")
        previous = event_hash(previous, job, r["originator_version"], r["topic"], state)
        log.sql(
            "UPDATE jobtrail_events SET state = %s, chain_hash = %s WHERE notification_id = %s",
            [state, previous, r["notification_id"]],
        )


def test_checkpoints_chain_and_the_projector_refuses_to_re_anchor_a_rewritten_log(
    log: Log,
) -> None:
    # Given two checkpoints, the second covering a job the first does not
    first = log.checkpoint()
    late = uuid.uuid4()
    log.store.execute(late, lambda _: Job.submit(CAUSE, job_type="t", payload={}, job_id=late))
    for step in _lifecycle():
        log.store.execute(late, step)
    second = log.checkpoint()
    assert first is not None and second is not None
    assert (first.seq, second.seq, second.previous) == (1, 2, first.digest)
    assert log.verify().ok

    # When the owner rewrites that job, deletes the checkpoint that covers it, and new events
    # arrive for the projector to checkpoint
    _rewrite_job(log, late)
    log.sql("DELETE FROM jobtrail_checkpoints WHERE seq = 2")
    _more_events(log)

    # Then the projector, which keeps the file copy, refuses to sign over the gap
    with pytest.raises(checkpoints.CheckpointChainError, match="checkpoint 2 of the file copy"):
        log.checkpoint()

    # And a checkpoint written anyway (by a process without the file) chains to the first one,
    # but verify with the file copy names the checkpoint the database lost
    with psycopg.connect(log.url, row_factory=dict_row, autocommit=True) as conn:
        forged = checkpoints.write_checkpoint(conn, key=KEY)
    assert forged is not None and forged.seq == 2 and forged.previous == first.digest
    report = log.verify()
    assert any(
        p.kind == "checkpoint-chain" and "checkpoint 2" in p.detail and "not the one in" in p.detail
        for p in report.problems
    ), report.problems


def test_a_checkpoint_deleted_or_replaced_among_others_breaks_their_chain(log: Log) -> None:
    # Given three checkpoints in the database (no file copy consulted below, no key needed)
    for _ in range(3):
        assert log.checkpoint() is not None
        _more_events(log)
    assert verify.verify_log(log.url).ok

    # When the middle one is deleted
    with psycopg.connect(log.url, row_factory=dict_row) as conn:
        marks = checkpoints.checkpoints(conn)
    middle = {"notification_id": marks[1].notification_id, "events": marks[1].events}
    first = {"digest": marks[0].digest}
    log.sql("DELETE FROM jobtrail_checkpoints WHERE seq = 2")

    # Then the third no longer follows the first
    report = verify.verify_log(log.url)
    assert kinds(report) == ["checkpoint-chain"]
    assert "checkpoint 2 deleted or replaced" in report.problems[0].detail

    # And when it is put back replaced (same number, same predecessor, another head: what an
    # owner who rewrote the log it covers would store), the third still does not follow it
    log.sql(
        "INSERT INTO jobtrail_checkpoints (notification_id, head, events, seq, previous) "
        "VALUES (%s, %s, %s, 2, %s)",
        [middle["notification_id"], bytes(32), middle["events"], first["digest"]],
    )
    report = verify.verify_log(log.url)
    assert "checkpoint-chain" in kinds(report)
    assert any("checkpoint 3" in p.detail for p in report.problems), report.problems


TRACE_ID, SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_traced_events_chain_after_untraced_ones_and_their_trace_is_covered(log: Log) -> None:
    # Given a job whose first events were written without a trace (the shape from before
    # traces), and one more written in a trace
    job = log.jobs[4]
    traced = replace(CAUSE, trace_id=TRACE_ID, span_id=SPAN_ID)
    now = datetime.now(UTC)
    log.store.execute(
        job, existing(lambda j: j.start(traced, worker_id="w1", attempt=1, lease_s=30, now=now))
    )
    log.checkpoint()
    # Then the old rows read no trace and the new one reads its trace, and the log verifies
    events = log.store.history(job)
    assert [(e.trace_id, e.span_id) for e in events] == [(None, None)] * 2 + [(TRACE_ID, SPAN_ID)]
    assert b"trace_id" not in bytes(log.row(job, 1)["state"])
    assert log.verify().ok
    # When the trace id of the traced row is edited, the chain names that row
    log.sql(
        "UPDATE jobtrail_events SET state = "
        "convert_to(replace(convert_from(state, 'UTF8'), %s, %s), 'UTF8') "
        "WHERE originator_id = %s AND originator_version = 3",
        [TRACE_ID, "f" * 32, job],
    )
    report = log.verify()
    assert (report.problems[0].kind, report.problems[0].version) == ("hash", 3)
