"""A command whose events cannot be stored fails alone; a lost COMMIT still in flight is waited
for by the re-read. Real PostgreSQL."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.domain import Job, Status
from shared.eventstore import JobStore, UndecodableHistoryError, UnstorableEventError, existing
from shared.eventstore.commands import Undecodable
from shared.settings import StoreSettings
from tests.jobs import CAUSE, insert_row


def submit(job_id: uuid.UUID, **payload: Any) -> Any:
    return lambda _: Job.submit(CAUSE, job_type="t", payload=payload, job_id=job_id)


def test_an_unstorable_command_fails_alone_and_the_rest_of_its_batch_commits(
    store: JobStore,
) -> None:
    # Given a batch of five submissions, the third with a lone surrogate in its payload
    ids = [uuid.uuid4() for _ in range(5)]
    commands = [(job_id, submit(job_id, n=i)) for i, job_id in enumerate(ids)]
    commands[2] = (ids[2], submit(ids[2], name="report-\udcff.csv"))

    # When they are written in one transaction
    outcomes = store.execute_batch(commands)

    # Then only the third is refused, saying why, and nothing of it is in the log
    assert [o.error is None for o in outcomes] == [True, True, False, True, True]
    error = outcomes[2].error
    assert isinstance(error, UnstorableEventError) and error.job_id == ids[2]
    assert "Submitted cannot be stored" in str(error) and "\\udcff" in str(error)
    assert [len(store.history(x)) for x in ids if x != ids[2]] == [1, 1, 1, 1]
    assert not store.get_many([ids[2]])


class CommitStillInFlight(JobStore):
    """Sends COMMIT, which the server holds (a deferred trigger waits for a lock another session
    holds), and reports the connection lost meanwhile: the answer is lost while the transaction
    is still committing."""

    HOLD = 7261999

    def __init__(self, settings: StoreSettings) -> None:
        super().__init__(settings)
        self.armed = False
        self.committing: threading.Thread | None = None

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        if not self.armed:
            return super()._commit(conn)
        self.armed = False
        conn.execute(
            "CREATE FUNCTION pg_temp.hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"PERFORM pg_advisory_lock({self.HOLD}); PERFORM pg_advisory_unlock({self.HOLD}); "
            "RETURN NULL; END $$"
        )
        conn.execute("CREATE TEMP TABLE hold (x int) ON COMMIT DROP")
        conn.execute(
            "CREATE CONSTRAINT TRIGGER hold AFTER INSERT ON hold DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION pg_temp.hold()"
        )
        conn.execute("INSERT INTO hold VALUES (1)")
        self.committing = threading.Thread(target=super()._commit, args=(conn,))
        self.committing.start()
        time.sleep(0.3)  # the COMMIT has reached the server and waits in the trigger
        raise psycopg.OperationalError("server closed the connection unexpectedly")


def test_the_re_read_after_a_lost_commit_waits_for_the_commit_in_flight(
    store_settings: StoreSettings, postgres_url: str
) -> None:
    # Given a scheduled job, and a session holding the lock that will hold the next COMMIT back
    store = CommitStillInFlight(store_settings)
    job_id = uuid.uuid4()
    store.execute(job_id, submit(job_id))
    store.execute(job_id, lambda j: (j.schedule(CAUSE, datetime.now(UTC)), j)[1])  # type: ignore[union-attr]
    holder = psycopg.connect(postgres_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", [CommitStillInFlight.HOLD])
    release = threading.Timer(1.5, holder.execute, ["SELECT pg_advisory_unlock_all()"])
    try:
        # When a worker claims it and the COMMIT's answer is lost while it is still committing
        store.armed = True
        release.start()
        started = store.execute(
            job_id,
            lambda j: (  # type: ignore[union-attr]
                j.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=datetime.now(UTC)),
                j,
            )[1],
        )

        # Then the claim is known to have succeeded once (no refusal, no second Started)
        assert started.status is Status.RUNNING
        names = [type(e).__name__ for e in store.history(job_id)]
        assert names == ["Submitted", "Scheduled", "Started"]
        assert store.stats.unknown_commits == 1
    finally:
        release.join()
        if store.committing is not None:
            store.committing.join(10)
        holder.close()
        store.close()


def test_a_job_whose_history_does_not_decode_fails_alone_in_its_batch(store: JobStore) -> None:
    # Given a job whose Submitted row was written around jobtrail and does not decode
    damaged, good = uuid.uuid4(), uuid.uuid4()
    insert_row(store, damaged, "shared.domain.job:Job.Submitted", b"{not json")
    store.execute(good, submit(good, n=1))

    # When one batch holds a command on each
    cancel = existing(lambda job: job.request_cancel(CAUSE))
    outcomes = store.execute_batch([(damaged, cancel), (good, cancel)])

    # Then the damaged job's command is refused naming the row, and the other one commits
    error = outcomes[0].error
    assert isinstance(error, UndecodableHistoryError) and error.job_id == damaged
    assert "version 1" in str(error)
    assert outcomes[1].error is None
    assert store.get(good).status is Status.CANCELLED


def test_a_row_naming_a_foreign_module_is_read_as_undecodable_and_imports_nothing(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an installed module whose import has a side effect, and a row of the log written
    # around jobtrail whose topic names it
    name = f"planted_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    forged, good = uuid.uuid4(), uuid.uuid4()
    after = store.max_notification_id()  # the session's log holds other tests' rows
    store.execute(good, submit(good, n=1))
    insert_row(store, forged, f"{name}:Thing", b"{}")

    # When a command runs on that job, and a follower reads the log
    outcomes = store.execute_batch([(forged, existing(lambda job: job.request_cancel(CAUSE)))])
    skipped: list[Undecodable] = []
    read = store.events_after(after, 100, skipped=skipped)

    # Then the command fails naming the job, the follower skips that row alone (to quarantine
    # it), and the module was never imported
    assert isinstance(outcomes[0].error, UndecodableHistoryError)
    refused = [u for u in skipped if u.job_id == forged]
    assert len(refused) == 1 and "not a job event" in refused[0].error
    assert good in {event.originator_id for _, event in read}
    assert not (tmp_path / "ran").exists() and name not in sys.modules
