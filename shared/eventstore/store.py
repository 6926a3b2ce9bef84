"""Locked commands against the job log: load, decide and append in one PostgreSQL transaction.

Every command runs while its transaction holds ``pg_advisory_xact_lock`` on the job (the
pessimistic lock). The append still goes through the (job id, version) primary key, so a writer
that bypassed the lock is caught (the optimistic backstop) and the command is decided again from
a fresh load. Commands for many jobs share one transaction (group commit); locks are taken in key
order so that two batches never deadlock.

One class, ``JobStore``, kept whole though over 300 lines: its commands and reads share the
pool, the lock keys, the mapper and the decoding, and the commit path (lock, load, decide,
append, the outcome of a lost COMMIT) is one transaction that reads best in one place. What a
command is and returns lives in ``commands``, the schema in ``schema``, the derived tables in
``tables``; other modules reach the database through ``connection()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile
from typing import Any, cast
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    Mapper,
    Notification,
    OperationalError,
    StoredEvent,
)
from eventsourcing.utils import get_topic
from psycopg import sql

from shared.domain.cause import describe
from shared.domain.errors import JobNotFoundError
from shared.domain.job import Job
from shared.eventstore import schema, tables
from shared.eventstore.chain import GENESIS, event_hash
from shared.eventstore.commands import (
    Command,
    ConcurrencyError,
    Outcome,
    StoreStats,
    Undecodable,
    UndecodableHistoryError,
    UnstorableEventError,
    fold,
)
from shared.eventstore.locks import job_key
from shared.eventstore.recorder import JobRecorder
from shared.eventstore.topics import JobEventsOnly
from shared.settings import StoreSettings

log = logging.getLogger(__name__)


def _fold(job: Job | None, events: Iterable[Job.Event]) -> Job | None:
    """``fold`` as a projector function of eventsourcing's repository (job first)."""
    return fold(events, job)


_TRANSIENT = (
    OperationalError,
    InterfaceError,
    InternalError,  # e.g. the session was ended by idle_in_transaction_session_timeout
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.InternalError,
)


class JobLog(Application[UUID]):
    """The eventsourcing application whose events table is the log (``jobtrail_events``)."""

    name = "jobtrail"

    def construct_mapper(self) -> Mapper[UUID]:
        # only job events are ever imported from a row's topic (topics.py)
        return self.factory.mapper(self.construct_transcoder(), mapper_class=JobEventsOnly)


class JobStore:
    """Runs job commands under per-job locks and reads jobs and their histories."""

    def __init__(self, settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings()
        with schema.creating(self.settings):  # services starting together create tables once
            self.app = JobLog(env=self.settings.eventsourcing_env())
            self.recorder = cast(JobRecorder, self.app.recorder)
            if self.settings.postgres_create_schema:
                with self.connection() as conn:
                    schema.create(conn, self.recorder.events_table_name)
        self.stats = StoreStats()
        self._stats_lock = threading.Lock()
        self.table = table = sql.Identifier(
            self.settings.postgres_schema, self.recorder.events_table_name
        )
        """The events table, schema-qualified, for queries of our own."""
        self._select_many = sql.SQL(
            "SELECT originator_id, originator_version, topic, state, chain_hash FROM {} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(table)
        self._select_states = sql.SQL(
            "SELECT originator_id, originator_version, state FROM {} "
            "WHERE (originator_id, originator_version) IN "
            "(SELECT * FROM unnest(%s::uuid[], %s::bigint[]))"
        ).format(table)

    @property
    def events_table(self) -> str:
        return str(self.recorder.events_table_name)

    @property
    def max_connections(self) -> int:
        return self.settings.max_connections

    def close(self) -> None:
        self.app.close()

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection of the log's pool (autocommit, dict rows), returned to it on exit: the
        one way other modules (archive, export, the derived tables) reach the database."""
        return cast(
            AbstractContextManager[psycopg.Connection[Any]],
            self.recorder.datastore.get_connection(),
        )

    # -- commands -------------------------------------------------------------------------------

    def execute(self, job_id: UUID, command: Command) -> Job:
        """Runs one command under the job's lock; returns the job or raises the command's error."""
        return self.execute_batch([(job_id, command)])[0].unwrap()

    def execute_batch(self, commands: Sequence[tuple[UUID, Command]]) -> list[Outcome]:
        """Runs commands in one transaction, in order; a refused command does not stop the rest.

        Raises ConcurrencyError when the batch met a lock-bypassing writer, or a failing database,
        more often than the settings allow.
        """
        retries = self.settings.store_conflict_retries
        give_up = time.monotonic() + self.settings.store_retry_budget_s
        for attempt in range(retries + 1):
            try:
                return self._run_batch(commands)
            except IntegrityError as exc:
                self._count(conflicts=1)
                log.warning("version conflict (attempt %d): %s", attempt + 1, exc)
                error: Exception = exc
            except _TRANSIENT as exc:
                self._count(transient_retries=1)
                log.warning("database error (attempt %d): %s", attempt + 1, exc)
                error = exc
            if time.monotonic() > give_up:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
        raise ConcurrencyError(f"gave up after {attempt + 1} attempts: {error}") from error

    def _run_batch(self, commands: Sequence[tuple[UUID, Command]]) -> list[Outcome]:
        keys = sorted({job_key(job_id) for job_id, _ in commands})
        ids = list({job_id for job_id, _ in commands})
        with self.connection() as conn:
            with self._transaction(conn) as committed:
                self._lock(conn, keys)
                heads: dict[UUID, bytes] = {}
                broken: dict[UUID, UndecodableHistoryError] = {}
                history = self._load(conn, ids, heads, broken)
                decided = [
                    (Outcome(error=broken[job_id]), [])
                    if job_id in broken
                    else self._decide(job_id, command, history)
                    for job_id, command in commands
                ]
                outcomes = [outcome for outcome, _ in decided]
                new_events = [event for outcome in outcomes for event in outcome.events]
                stored = [s for _, encoded in decided for s in encoded]
                notification_ids: Sequence[int] | None = []
                if stored:
                    hashes = []
                    for s in stored:
                        job_id = cast(UUID, s.originator_id)
                        heads[job_id] = event_hash(
                            heads.get(job_id, GENESIS),
                            job_id,
                            s.originator_version,
                            s.topic,
                            s.state,
                        )
                        hashes.append(heads[job_id])
                    notification_ids = self.recorder.insert_events(
                        stored, conn=conn, chain_hashes=hashes
                    )
                    tables.maintain(conn, new_events)
            if not committed.ok and not self._committed(stored, keys):
                raise OperationalError("commit outcome unknown and the events are not there")
        # committed: these are the rows' ids (a retried batch never gets here with old ones)
        assert notification_ids is not None and len(notification_ids) == len(stored)
        position = 0
        for outcome in outcomes:
            end = position + len(outcome.events)
            outcome.notification_ids = list(notification_ids[position:end])
            position = end
        self._count(batches=1, commands=len(commands), events=len(stored))
        return outcomes

    @staticmethod
    def _lock(conn: psycopg.Connection[Any], keys: list[int]) -> None:
        """Takes the jobs' advisory locks (sorted keys: two batches never deadlock) until the end
        of the caller's transaction."""
        conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", [keys])

    @contextmanager
    def _transaction(self, conn: psycopg.Connection[Any]) -> Iterator[_Commit]:
        """BEGIN ... COMMIT; a failure during COMMIT is reported (outcome unknown), not raised."""
        commit = _Commit()
        conn.execute("BEGIN")
        try:
            yield commit
        except BaseException:
            if not conn.closed:
                conn.execute("ROLLBACK")
            raise
        try:
            self._commit(conn)
        except _TRANSIENT as exc:
            self._count(unknown_commits=1)
            log.warning("connection failed during COMMIT, re-reading to decide: %s", exc)
            commit.ok = False

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("COMMIT")

    def _committed(self, stored: Sequence[StoredEvent], keys: list[int]) -> bool:
        """After an unknown COMMIT outcome: True when exactly our events are in the log.

        The read holds the jobs' locks, so it waits for the old transaction to end: a COMMIT
        still in flight on the server would otherwise read as absent, and the retry would then
        be refused by the very events it had written.
        """
        if not stored:
            return True
        with self.connection() as conn, conn.transaction():
            self._lock(conn, keys)
            rows = conn.execute(
                self._select_states,
                [[s.originator_id for s in stored], [s.originator_version for s in stored]],
            ).fetchall()
        found = {(r["originator_id"], r["originator_version"]): bytes(r["state"]) for r in rows}
        ours = [found.get((s.originator_id, s.originator_version)) == s.state for s in stored]
        if all(ours):
            return True
        if any(ours):  # a transaction is atomic: all or none of its rows are there
            raise RuntimeError("partial commit observed; the log is inconsistent")
        return False

    def _load(
        self,
        conn: psycopg.Connection[Any],
        ids: list[UUID],
        heads: dict[UUID, bytes] | None = None,
        broken: dict[UUID, UndecodableHistoryError] | None = None,
    ) -> dict[UUID, list[Job.Event]]:
        """Every event of the jobs; ``heads`` receives each job's last chain hash. A row that
        does not decode raises, or, given ``broken``, leaves its job out and is named there."""
        rows = conn.execute(self._select_many, [ids]).fetchall()
        history: dict[UUID, list[Job.Event]] = defaultdict(list)
        for row in rows:
            job_id = row["originator_id"]
            if heads is not None:  # rows come in version order: the last one stays
                heads[job_id] = bytes(row["chain_hash"] or GENESIS)
            if broken is not None and job_id in broken:
                continue
            try:
                history[job_id].append(self.decode(row))
            except Exception as exc:
                if broken is None:
                    raise
                broken[job_id] = UndecodableHistoryError(job_id, row["originator_version"], exc)
                history.pop(job_id, None)
        return history

    def decode(self, row: Mapping[str, Any]) -> Job.Event:
        """A row of the events table (originator_id, originator_version, topic, state) as its
        domain event."""
        stored = StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        return cast(Job.Event, self.app.mapper.to_domain_event(stored))

    def _decide(
        self, job_id: UUID, command: Command, history: dict[UUID, list[Job.Event]]
    ) -> tuple[Outcome, list[StoredEvent]]:
        """Runs one command against its job and encodes its new events; a command that refuses,
        or whose events cannot be stored, records nothing and leaves the rest of the batch."""
        events = history.get(job_id, [])
        current = fold(events)
        try:
            job = command(current)
            if job.id != job_id:
                raise ValueError(f"command for {job_id} returned job {job.id}")
            new = cast(list[Job.Event], list(job.collect_events()))
            stored = [self._encode(event) for event in new]
        except JobNotFoundError as exc:
            error = exc if exc.job_id is not None else JobNotFoundError(job_id)
            return Outcome(error=error), []
        except Exception as exc:  # the command refused: nothing of it is recorded
            return Outcome(error=exc), []
        history[job_id] = [*events, *new]
        return Outcome(job=job, events=new), stored

    def _encode(self, event: Job.Event) -> StoredEvent:
        """The event as the log stores it; UnstorableEventError names what cannot be stored."""
        try:
            return self.app.mapper.to_stored_event(event)
        except Exception as exc:  # a lone surrogate, a value JSON cannot hold
            raise UnstorableEventError(event, exc) from exc

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, job_id: UUID, *, version: int | None = None) -> Job:
        """The job now, or as it was at ``version``; raises JobNotFoundError."""
        try:
            return self.app.repository.get(job_id, version=version, projector_func=_fold)
        except AggregateNotFoundError:
            raise JobNotFoundError(job_id) from None

    def get_at(self, job_id: UUID, at: datetime) -> Job:
        """The job as it was at time ``at``: the fold of the longest prefix of its history (in
        version order) whose events are all stamped at or before ``at``; JobNotFoundError when
        its first event is stamped after ``at``.

        Each event is stamped by the clock of the process that wrote it, so a history written by
        processes whose clocks disagree can go backwards in time. A prefix, not a filter: a later
        version is never folded without the ones before it (the fold needs them, and a state
        that skips an event never existed), so an event stamped early waits for its
        predecessors (docs/audit.md, "Point in time").
        """
        if at.tzinfo is None:
            raise ValueError("at must carry a time zone")
        events = list(takewhile(lambda e: e.timestamp <= at, self.history(job_id)))
        if not events:
            raise JobNotFoundError(job_id)
        return cast(Job, fold(events))

    def history(self, job_id: UUID) -> list[Job.Event]:
        """Every event of the job in version order; raises JobNotFoundError when there is none."""
        events = cast(list[Job.Event], list(self.app.events.get(job_id)))
        if not events:
            raise JobNotFoundError(job_id)
        return events

    def events_after(
        self,
        after: int,
        limit: int,
        kinds: Sequence[type[Job.Event]] = (),
        skipped: list[Undecodable] | None = None,
    ) -> list[tuple[int, Job.Event]]:
        """Up to ``limit`` (notification id, event) pairs after ``after``, in commit order;
        only events of ``kinds`` when given (filtered in SQL). A row that cannot be decoded
        raises, or, when ``skipped`` is given, is left out and listed there (a follower
        quarantines it instead of stopping at it for good)."""
        topics = [get_topic(kind) for kind in kinds]
        notifications = cast(
            Sequence[Notification],
            self.recorder.select_notifications(
                after, limit, topics=topics, inclusive_of_start=False
            ),
        )
        entries = []
        for n in notifications:
            try:
                entries.append((n.id, cast(Job.Event, self.app.mapper.to_domain_event(n))))
            except Exception as exc:
                if skipped is None:
                    raise
                error = describe(exc)
                skipped.append(
                    Undecodable(n.id, n.originator_id, n.originator_version, n.topic, error)
                )
        return entries

    def get_many(self, job_ids: Sequence[UUID]) -> list[Job]:
        """The current state of several jobs in one query; unknown ids are left out."""
        with self.connection() as conn:
            history = self._load(conn, list(job_ids))
        return [cast(Job, fold(events)) for events in history.values()]

    def max_notification_id(self) -> int:
        return int(self.recorder.max_notification_id() or 0)

    def due_timers(self, limit: int = 500, grace_s: float = 5.0) -> list[tuple[UUID, int | None]]:
        with self.connection() as conn:
            return tables.due_timers(conn, limit, grace_s)

    def expired_leases(self, limit: int = 500) -> list[tuple[UUID, int]]:
        with self.connection() as conn:
            return tables.expired_leases(conn, limit)

    def renew_leases(
        self, worker_id: str, attempts: Sequence[tuple[UUID, int]], lease_s: float
    ) -> dict[tuple[UUID, int], bool]:
        with self.connection() as conn:
            return tables.renew_leases(conn, worker_id, attempts, lease_s)

    def cancel_requests(self, worker_id: str) -> list[tuple[UUID, int]]:
        with self.connection() as conn:
            return tables.cancel_requests(conn, worker_id)

    def position(self, name: str) -> int:
        """A follower's saved position in the log (0 when it has none)."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT position FROM jobtrail_positions WHERE name = %s", [name]
            ).fetchone()
        return int(row["position"]) if row else 0

    def set_position(self, name: str, position: int) -> None:
        with self.connection() as conn:
            conn.execute(
                "INSERT INTO jobtrail_positions (name, position) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
                [name, position],
            )


@dataclass
class _Commit:
    ok: bool = True
