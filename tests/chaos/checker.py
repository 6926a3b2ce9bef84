"""The history checker: after a scenario settles, counts what jobtrail promised never happens.

- lost: acknowledged (202), yet no final state (COMPLETED, FAILED, CANCELLED) after settling
- duplicated: two final events without a Requeued between, two outcomes for one attempt, or an
  outcome recorded by a worker that did not hold that attempt (fenced out)
- illegal: versions not exactly 1..n, or a move the transition table forbids
- drift: the Redis hash differs from the state folded from the events (or is missing, unless
  Redis may evict: then a missing hash is counted as ``evicted``, not drift)
- executions: handler runs counted outside the log; "unexplained" are runs beyond the attempts the
  history shows started (a run the history cannot account for)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.application import project_aggregate

from shared.domain import Job
from shared.domain.errors import JobError
from shared.domain.status import TERMINAL
from shared.drift import differences

OUTCOMES = (Job.Completed, Job.AttemptFailed, Job.Failed, Job.LeaseExpired)


@dataclass
class Report:
    jobs: int = 0
    lost: int = 0
    duplicated: int = 0
    illegal: int = 0
    drift: int = 0
    executions: int = 0
    extra: int = 0  # runs beyond those the job planned to fail (a worker died, a lease ran out)
    unexplained: int = 0
    evicted: int = 0  # hashes missing where Redis may evict keys (allkeys-lru): reads use the log
    chain: int = 0  # hash-chain or checkpoint mismatches found by verify_log (docs/audit.md)
    details: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.illegal
            or self.drift
            or self.unexplained
            or self.chain
        )

    def note(self, kind: str, job_id: Any, why: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.details) < 30:
            self.details.append(f"{kind}: {job_id}: {why}")


def duplicated(events: list[Job.Event]) -> str | None:
    """Why the history records an outcome twice or from a fenced-out worker, else None."""
    finals = 0
    holder: dict[int, str] = {}
    outcomes: dict[int, int] = {}
    for event in events:
        if isinstance(event, Job.Requeued):
            finals = 0
        if isinstance(event, Job.Started):
            holder[event.attempt] = event.worker_id
        if event.ends_job:
            finals += 1
            if finals > 1:
                return f"second final event at v{event.originator_version}"
        if isinstance(event, OUTCOMES) or (
            isinstance(event, Job.Cancelled) and event.worker_id is not None
        ):
            attempt = (
                event.attempt if not isinstance(event, Job.Cancelled) else max(holder, default=0)
            )
            outcomes[attempt] = outcomes.get(attempt, 0) + 1
            if outcomes[attempt] > 1:
                return f"second outcome for attempt {attempt} at v{event.originator_version}"
            worker = getattr(event, "worker_id", None)
            if not isinstance(event, Job.LeaseExpired) and worker != holder.get(attempt):
                return f"outcome by {worker}, but attempt {attempt} was {holder.get(attempt)}'s"
    return None


def illegal(events: list[Job.Event]) -> str | None:
    versions = [e.originator_version for e in events]
    if versions != list(range(1, len(events) + 1)):
        return f"versions {versions[:12]}"
    try:
        project_aggregate(None, events)
    except JobError as exc:
        return str(exc)
    return None


def planned_runs(submitted: Job.Event) -> int:
    """Runs a job needs with no fault: its planned failures plus one, up to max_attempts."""
    assert isinstance(submitted, Job.Submitted)
    fail_times = submitted.payload.get("fail_times", 0) if submitted.job_type == "chaos.work" else 0
    return min(int(fail_times) + 1, submitted.max_attempts)


def check(
    histories: dict[uuid.UUID, list[Job.Event]],
    acknowledged: Iterable[uuid.UUID],
    cached: dict[uuid.UUID, dict[str, str]],
    runs: dict[str, list[int]],
    *,
    evictable: bool = False,
) -> Report:
    """Counts every kind of broken promise over the acknowledged jobs."""
    report = Report()
    for job_id in acknowledged:
        report.jobs += 1
        events = histories.get(job_id, [])
        if not events:
            report.note("lost", job_id, "no events at all")
            continue
        why = duplicated(events)
        if why:
            report.note("duplicated", job_id, why)
        why = illegal(events)
        if why:
            report.note("illegal", job_id, why)
            continue
        job: Job = project_aggregate(None, events)  # type: ignore[assignment]
        if job.status not in TERMINAL:
            report.note("lost", job_id, f"still {job.status}")
        have = cached.get(job_id)
        if evictable and have is None:
            report.evicted += 1
        else:
            diff = differences(job, have)
            if diff:
                why = "missing" if have is None else diff
                report.note("drift", job_id, f"redis differs: {why}")
        attempts = runs.get(str(job_id), [])
        started = {e.attempt for e in events if isinstance(e, Job.Started)}
        report.executions += len(attempts)
        report.extra += max(0, len(attempts) - planned_runs(events[0]))
        unexplained = [a for a in attempts if a not in started] + [
            a for a in set(attempts) if attempts.count(a) > 1
        ]
        if unexplained:
            report.note("unexplained", job_id, f"runs of attempts {unexplained} not in history")
    return report
