"""Oversized and invalid client-supplied values among normal jobs, under load.

Every value a client sends that later travels in a message (request and correlation ids), or
is stored in the log (idempotency keys, reasons, payloads), is either refused with a 4xx naming
it, or accepted and then harmless: no accepted value becomes a poison event, the relay never
stalls, every accepted job ends, and the checker finds nothing lost, duplicated, illegal or
drifting. Jobs whose result the log cannot store end FAILED (``UnstorableResult``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from eventsourcing.utils import get_topic

from shared.domain import Job, Status
from shared.outbox import KINDS
from tests.chaos.harness import Load, Scenario, mixed_jobs
from tests.processes import System

pytestmark = pytest.mark.chaos

LATER = (datetime.now(UTC) + timedelta(days=1)).isoformat()
"""A run_at well inside the accepted range: the job waits until a test cancels it."""
JOB = {"type": "chaos.work", "payload": {"ms": 20}}
RAW_JOB = '{"type":"chaos.work","payload":{"ms":20}}'


def bad_requests(job_id: str) -> list[tuple[str, str, dict[str, str], str]]:
    """(method, path, headers, body) of requests that must each be refused with a 4xx."""
    json_type = {"Content-Type": "application/json"}
    plain = RAW_JOB
    return [
        ("POST", "/v1/jobs", json_type | {"X-Request-Id": "r" * 129}, plain),
        ("POST", "/v1/jobs", json_type | {"X-Request-Id": "r" * 5000}, plain),
        ("POST", "/v1/jobs", json_type | {"X-Correlation-Id": "c" * 129}, plain),
        ("POST", "/v1/jobs", json_type | {"X-Correlation-Id": "c" * 5000}, plain),
        ("POST", "/v1/jobs", json_type | {"Idempotency-Key": "k" * 5000}, plain),
        ("POST", "/v1/jobs", json_type, RAW_JOB[:-1] + ',"idempotency_key":"' + "k" * 257 + '"}'),
        ("POST", "/v1/jobs", json_type, '{"type":"chaos.work","payload":{"ms":20,"x":"\\ud800"}}'),
        ("POST", "/v1/jobs", json_type, '{"type":"chaos.work","payload":{"\\udfff":1}}'),
        ("POST", "/v1/jobs", json_type, RAW_JOB[:-1] + ',"idempotency_key":"k\\ud800"}'),
        ("POST", f"/v1/jobs/{job_id}/cancel", json_type, '{"reason":"' + "x" * 1025 + '"}'),
        ("POST", f"/v1/jobs/{job_id}/cancel", json_type, '{"reason":"' + "x" * 5000 + '"}'),
        ("POST", f"/v1/jobs/{job_id}/cancel", json_type, '{"reason":"\\ud800"}'),
        ("POST", f"/v1/jobs/{job_id}/cancel", json_type | {"X-Request-Id": "r" * 129}, "{}"),
    ]


@dataclass
class BadClient:
    """Sends the bad requests in rounds while the load runs; keeps every answer, and the jobs
    its accepted requests created (a batch with one bad item, jobs with unstorable results)."""

    system: System
    rounds: int
    answers: list[tuple[int, str]] = field(default_factory=list)
    accepted: dict[str, uuid.UUID] = field(default_factory=dict)
    unstorable: list[uuid.UUID] = field(default_factory=list)
    batch_errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        with self.system.client(timeout=30) as http:
            target = http.post("/v1/jobs", json=JOB | {"run_at": LATER})
            self.accepted["far-future"] = uuid.UUID(target.json()["id"])
            for n in range(self.rounds):
                for method, path, headers, body in bad_requests(target.json()["id"]):
                    response = http.request(method, path, headers=headers, content=body)
                    self.answers.append((response.status_code, f"{path} {response.text[:160]}"))
                self._accepted_ones(http, n)
                time.sleep(0.5)
            http.post(f"/v1/jobs/{target.json()['id']}/cancel")  # so it ends

    def _accepted_ones(self, http: httpx.Client, n: int) -> None:
        bad = {"type": "chaos.work", "payload": {"ms": 1, "x": "\ud800"}}
        batch = [JOB, bad, JOB]
        content = json.dumps({"jobs": batch})  # ASCII: "\ud800" travels as its escape
        items = http.post(
            "/v1/jobs/batch", content=content, headers={"Content-Type": "application/json"}
        ).json()
        for item in items:
            if item["errors"]:
                self.batch_errors.append(str(item["errors"]))
            else:
                self.accepted[f"batch-{n}-{item['index']}"] = uuid.UUID(item["id"])
        listing = http.post("/v1/jobs", json={"type": "test.listing", "payload": {"fail": n % 2}})
        self.unstorable.append(uuid.UUID(listing.json()["id"]))
        self.accepted[f"listing-{n}"] = self.unstorable[-1]


@dataclass
class RelayWatch:
    """Samples the relay's position against the last event it must publish, every 0.25 s."""

    s: Scenario
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        topics = [get_topic(kind) for kind in KINDS]
        query = (
            f"SELECT (SELECT position FROM jobtrail_positions WHERE name = 'relay') AS position, "
            f"(SELECT max(notification_id) FROM {self.s.store.events_table} "
            "WHERE topic = ANY(%s)) AS head"
        )
        while not self.stop.wait(0.25):
            with self.s.store.recorder.datastore.get_connection() as conn:
                row = conn.execute(query, [topics]).fetchone()
            if row is not None:
                sample = (time.monotonic(), int(row["position"] or 0), int(row["head"] or 0))
                self.samples.append(sample)

    def longest_stall_s(self) -> float:
        """The longest time the relay stood still while behind (what it had not published)."""
        longest, since, last = 0.0, None, -1
        for at, position, head in self.samples:
            if position < head and position == last:
                since = since if since is not None else at
                longest = max(longest, at - since)
            else:
                since = None
            last = position
        return longest

    def max_lag(self) -> int:
        return max((head - position for _, position, head in self.samples), default=0)


def test_oversized_client_values_among_normal_jobs(run) -> None:  # type: ignore[no-untyped-def]
    with run("oversized and invalid client values among normal jobs") as s:
        started = time.monotonic()
        watch = RelayWatch(s)
        watcher = threading.Thread(target=watch.run, daemon=True)
        watcher.start()
        load = Load(s.system, mixed_jobs(400), rate_per_s=40).start()
        bad = BadClient(s.system, rounds=12)
        try:
            try:
                bad.run()
            finally:
                load.wait()
            load.acked |= bad.accepted  # the checker counts the bad client's accepted jobs too
            report = s.check(load, settle_s=120)
        finally:
            watch.stop.set()
            watcher.join()

        # Every bad request was refused with a 4xx; the good items of each batch went through
        statuses = sorted({status for status, _ in bad.answers})
        assert all(400 <= status < 500 for status, _ in bad.answers), [
            a for a in bad.answers if not 400 <= a[0] < 500
        ][:5]
        assert len(bad.answers) == 12 * 13 and len(bad.batch_errors) == 12
        assert all("payload" in e for e in bad.batch_errors), bad.batch_errors[:2]

        # Every accepted job ended, with a legal history, once, as Redis shows it
        assert not load.refused, load.refused[:5]
        assert report.clean, "\n".join(report.details)

        # Nothing accepted became poison, the relay never stood still behind, and the jobs
        # whose results the log cannot store ended FAILED once, saying why
        quarantined = s.store.recorder.datastore.get_connection
        with quarantined() as conn:
            rows = conn.execute("SELECT count(*) AS n FROM jobtrail_quarantine").fetchone()
        assert rows is not None and rows["n"] == 0
        assert watch.longest_stall_s() < 5.0, watch.longest_stall_s()
        assert watch.samples[-1][1] == watch.samples[-1][2]  # caught up at the end
        for job_id in bad.unstorable:
            job = s.store.get(job_id)
            assert job.status is Status.FAILED and job.error is not None
            assert job.error["type"] == "UnstorableResult"
            history = s.store.history(job_id)
            assert sum(isinstance(e, Job.Started) for e in history) == 1
        print(
            f"\npoison values: {report.jobs} jobs checked, {len(bad.answers)} refused "
            f"(statuses {statuses}), relay max lag {watch.max_lag()} events, longest stall "
            f"{watch.longest_stall_s():.2f} s, {time.monotonic() - started:.0f} s in all"
        )
