"""One job's hash chain checked on demand, for the dashboard's job page and any audit-scoped
client: the checks ``jobtrail verify`` runs over the whole log (shared/eventstore/verify.py),
applied to the rows of one job, plus whether a checkpoint of the log head covers its newest
event (a chain alone cannot show that whole rows were appended later, a checkpoint can)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql

from shared.domain.errors import JobNotFoundError
from shared.eventstore import JobStore
from shared.eventstore.rows import Row
from shared.eventstore.schema import CHECKPOINTS
from shared.eventstore.verify import Report, check_chains


def verify_job(store: JobStore, job_id: UUID) -> dict[str, Any]:
    """The verification of one job's chain: ok, events, problems (kind, detail, version), the
    notification id of its newest event and whether a checkpoint covers it; JobNotFoundError
    when the log holds no event of the job."""
    query = sql.SQL("SELECT * FROM {} WHERE originator_id = %s ORDER BY originator_version")
    with store.connection() as conn:
        rows = conn.execute(query.format(store.table), [job_id]).fetchall()
        newest = conn.execute(
            sql.SQL("SELECT max(notification_id) AS n FROM {}").format(sql.Identifier(CHECKPOINTS))
        ).fetchone()
    if not rows:
        raise JobNotFoundError(job_id)
    report = Report()
    check_chains((Row.from_db(row) for row in rows), report)
    last = max(int(row["notification_id"]) for row in rows)
    covered = newest is not None and newest["n"] is not None and int(newest["n"]) >= last
    return {
        "job_id": job_id,
        "ok": report.ok,
        "events": report.events,
        "problems": [
            {"kind": p.kind, "detail": p.detail, "version": p.version} for p in report.problems
        ],
        "last_notification_id": last,
        "checkpointed": covered,
    }
