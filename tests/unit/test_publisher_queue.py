"""A writer's Publisher (shared/publishing.py) with a broker that confirms when the test says:
the commit hook never waits, the queue is bounded (past it, messages are left to the relay),
only confirmed messages are marked, and only the kinds a service consumes are published."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from prometheus_client import REGISTRY

from shared.domain import Job
from shared.eventstore import Outcome
from shared.messaging import Routes, make_broker
from shared.outbox import to_message
from shared.publishing import Publisher, RelayMarks, mark_of
from shared.settings import BusSettings
from tests.jobs import CAUSE, unchecked_cause


class HeldBroker:
    """Stands for one kind's publisher: each publish waits until released, then is confirmed,
    or fails when ``refuse`` names its message id."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []
        self.refuse: set[str] = set()
        self.waiting = 0

    async def publish(self, body: bytes, **options: Any) -> None:
        self.waiting += 1
        await self.release.wait()
        self.waiting -= 1
        if options["message_id"] in self.refuse:
            raise ConnectionError("not confirmed")
        self.sent.append(options["message_id"])


class MemoryMarks(RelayMarks):
    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    async def mark(self, rows: Sequence[tuple[int, str]]) -> None:
        self.rows |= {mark: notification_id for notification_id, mark in rows}


def committed(n: int, first_id: int = 100) -> list[Outcome]:
    """``n`` jobs submitted and dispatched, as the store reports a committed batch."""
    outcomes = []
    for i in range(n):
        job = Job.submit(CAUSE, job_type="t", payload={})
        job.dispatch_if_due(CAUSE)
        events = list(job.collect_events())  # Submitted, Scheduled
        ids = [first_id + 2 * i, first_id + 2 * i + 1]
        outcomes.append(Outcome(job=job, events=events, notification_ids=ids))  # type: ignore[arg-type]
    return outcomes


def skipped() -> float:
    return (
        REGISTRY.get_sample_value("jobtrail_published_on_commit_total", {"outcome": "skipped"})
        or 0.0
    )


def publisher(max_pending: int, batch: int = 2) -> tuple[Publisher, HeldBroker, MemoryMarks]:
    bus = BusSettings(topology_prefix="jt-unit")
    marks = MemoryMarks()
    pub = Publisher(
        make_broker(bus),
        Routes.from_settings(bus),
        marks,
        timeout_s=1,
        max_pending=max_pending,
        batch=batch,
        rounds=1,
    )
    held = HeldBroker()
    pub.publishers = {kind: held for kind in pub.publishers}  # type: ignore[misc]
    return pub, held, marks


async def test_the_queue_is_bounded_and_what_does_not_fit_is_left_to_the_relay() -> None:
    # Given a publisher that holds at most 3 messages, and a broker that has not confirmed yet
    pub, held, marks = publisher(max_pending=3)
    pub.start()
    before = skipped()
    try:
        # When 5 jobs are committed (5 Scheduled events among 10), the hook returns at once
        outcomes = committed(5)
        pub.on_commit(outcomes)
        await asyncio.sleep(0.05)

        # Then 3 are queued or in flight (one round of 2 at the broker), 2 were skipped
        assert pub.pending == 3
        assert held.waiting == 2
        assert skipped() - before == 2
        # and more commits while it is full are skipped too, without waiting
        pub.on_commit(committed(2, first_id=500))
        assert pub.pending == 3 and skipped() - before == 4

        # When the broker confirms, the 3 are marked by (notification id, job, version)
        held.release.set()
        await pub.aclose(timeout_s=5)
        expected = {
            mark_of(o.notification_ids[1], o.events[1]): o.notification_ids[1] for o in outcomes[:3]
        }
        assert marks.rows == expected
        assert len(held.sent) == 3 and pub.pending == 0
    finally:
        await pub.aclose(timeout_s=0)


async def test_only_confirmed_messages_are_marked_and_poison_is_left_to_the_relay() -> None:
    # Given three committed jobs: one whose publish will not be confirmed, one whose Scheduled
    # event cannot become a message (a causation id the envelope refuses)
    pub, held, marks = publisher(max_pending=100, batch=10)
    pub.start()
    good, refused = committed(2)
    poison_job = Job.submit(CAUSE, job_type="t", payload={})
    poison_job.schedule(unchecked_cause(causation_id="r" * 129))
    poison = Outcome(
        job=poison_job, events=list(poison_job.collect_events()), notification_ids=[7, 8]
    )  # type: ignore[arg-type]
    message = to_message(refused.notification_ids[1], refused.events[1])
    assert message is not None
    held.refuse.add(message.message_id)
    try:
        # When they are committed and the broker answers
        pub.on_commit([good, refused, poison])
        held.release.set()
        await pub.aclose(timeout_s=5)

        # Then only the confirmed one is marked; Submitted events were never published
        assert marks.rows == {
            mark_of(good.notification_ids[1], good.events[1]): good.notification_ids[1]
        }
        assert len(held.sent) == 1
    finally:
        await pub.aclose(timeout_s=0)
