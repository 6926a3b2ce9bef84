"""The one place that spells exchange, queue and routing-key names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

EventType = Literal[
    "Submitted",
    "Scheduled",
    "Started",
    "Completed",
    "AttemptFailed",
    "Failed",
    "LeaseExpired",
    "CancelRequested",
    "Cancelled",
    "Requeued",
]
"""The one list of the job events a message can carry, by their class names, as the type the
message schema uses (``contracts.messages.JobEventMessage.event_type``);
tests/unit/test_event_names.py keeps the domain's event classes in step with it. The domain's
Quarantined never travels."""

EVENT_TYPES: tuple[str, ...] = get_args(EventType)
"""The same list as names (routing kinds, ``jobtrail audit --type``)."""


def kind_of(event_type: str) -> str:
    """An event's kind, the word of its routing key: ``AttemptFailed`` -> ``attempt_failed``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_type).lower()


EVENT_KINDS = tuple(kind_of(name) for name in EVENT_TYPES)


@dataclass(frozen=True)
class Topology:
    """Names every exchange, queue and routing key under one prefix (one per deployment or test)."""

    prefix: str = "jobtrail"

    def __post_init__(self) -> None:
        if not _NAME.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} must match {_NAME.pattern}")

    @property
    def events_exchange(self) -> str:
        """Topic exchange on which the relay publishes every committed job event."""
        return f"{self.prefix}.events"

    @property
    def commands_exchange(self) -> str:
        """Direct exchange for command messages (submit, cancel)."""
        return f"{self.prefix}.commands"

    @property
    def dead_letter_exchange(self) -> str:
        """Fanout exchange receiving rejected and over-delivered messages."""
        return f"{self.prefix}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def dead_letter_ledger(self) -> str:
        """A second queue on the dead-letter exchange: its copy of each dead letter is recorded
        and acknowledged, while the one in ``dead_letter_queue`` stays for operators."""
        return f"{self.prefix}.dlq.ledger"

    @property
    def scheduler_queue(self) -> str:
        return f"{self.prefix}.scheduler"

    @property
    def submit_queue(self) -> str:
        return f"{self.prefix}.commands.submit"

    @property
    def cancel_queue(self) -> str:
        return f"{self.prefix}.commands.cancel"

    def queue_names(self, work_queues: Iterable[str]) -> list[str]:
        """Every queue of the topology, given the work queues declared."""
        fixed = [self.scheduler_queue, self.submit_queue, self.cancel_queue]
        fixed += [self.dead_letter_queue, self.dead_letter_ledger]
        return fixed + [self.work_queue(queue) for queue in work_queues]

    @property
    def exchange_names(self) -> list[str]:
        return [self.events_exchange, self.commands_exchange, self.dead_letter_exchange]

    def work_queue(self, queue: str) -> str:
        """The worker queue for a job queue name (``default``, ``cpu`` ...)."""
        check_queue_name(queue)
        return f"{self.prefix}.work.{queue}"

    @staticmethod
    def event_key(kind: str, queue: str | None = None) -> str:
        """Routing key of an event: ``job.<kind>``; scheduled events add ``.<queue>``."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        return f"job.{kind}.{queue}" if kind == "scheduled" and queue else f"job.{kind}"

    @staticmethod
    def scheduled_key(queue: str) -> str:
        check_queue_name(queue)
        return f"job.scheduled.{queue}"

    SUBMIT_KEY = "job.submit"
    CANCEL_KEY = "job.cancel"


def check_queue_name(queue: str) -> str:
    """Returns the queue name, or raises ValueError when it is not a safe routing word."""
    if not _NAME.match(queue) or "." in queue:
        raise ValueError(f"queue name {queue!r} must be lower-case letters, digits, '_' or '-'")
    return queue
