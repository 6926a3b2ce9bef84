"""Event names come from one list (contracts.names.EVENT_TYPES): the message schema, the routing
kinds, the relayed events and their descriptions, and the domain's event classes agree with it."""

from __future__ import annotations

from typing import get_args

from contracts.messages import EventType
from contracts.names import EVENT_KINDS, EVENT_TYPES, kind_of
from shared.eventstore.export import EVENT_TYPES as DOMAIN_EVENTS
from shared.outbox import KINDS
from shared.publishing import DESCRIPTIONS


def test_the_schema_spells_the_one_list() -> None:
    assert get_args(EventType) == EVENT_TYPES


def test_every_domain_event_but_quarantined_is_in_the_list() -> None:
    assert set(DOMAIN_EVENTS) - {"Quarantined"} == set(EVENT_TYPES)


def test_kinds_are_derived_and_the_relayed_ones_are_described() -> None:
    assert kind_of("AttemptFailed") == "attempt_failed" and kind_of("Requeued") == "requeued"
    assert set(KINDS.values()) <= set(EVENT_KINDS)
    assert set(DESCRIPTIONS) == set(KINDS.values())
    assert len(set(EVENT_KINDS)) == len(EVENT_TYPES)
