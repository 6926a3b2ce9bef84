"""Which classes a row of the log may name: the job's events, and nothing else.

eventsourcing turns a stored row back into an event by importing whatever module its ``topic``
column names (``resolve_topic``). A row appended by any role that can write the events table
would then make every reader (the relay, the projection, the API, ``jobtrail audit``) import an
arbitrary installed module: code runs on import. The mapper here resolves only the topics of
``Job.Event`` subclasses, computed from the classes themselves; any other topic is refused before
anything is imported (and so is a created event whose state names another aggregate class than
``Job``: eventsourcing imports that one too when it folds), and the row is treated like any other
undecodable row (the command on that job fails alone, the relay and the projection quarantine it
and go on).
"""

from __future__ import annotations

from functools import cache
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import TopicError, get_topic

from shared.domain.job import Job

JOB_TOPIC = get_topic(Job)


@cache
def allowed_topics() -> frozenset[str]:
    """The topic of every event class of a job (subclasses of ``Job.Event``, at any depth)."""
    found: set[str] = set()
    pending: list[type[Any]] = [Job.Event]
    while pending:
        cls = pending.pop()
        found.add(get_topic(cls))
        pending.extend(cls.__subclasses__())
    return frozenset(found)


class JobEventsOnly(Mapper[UUID]):
    """eventsourcing's mapper that refuses, before importing anything, a topic that is not a
    job event's."""

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        if stored_event.topic not in allowed_topics():
            shown = stored_event.topic[:200]
            raise TopicError(f"topic {shown!r} is not a job event: not imported")
        event = super().to_domain_event(stored_event)
        # a created event names the aggregate class in its state; folding it imports that topic
        named = event.__dict__.get("originator_topic")
        if named is not None and named != JOB_TOPIC:
            raise TopicError(f"event names aggregate {str(named)[:200]!r}, not a job: not imported")
        return event
