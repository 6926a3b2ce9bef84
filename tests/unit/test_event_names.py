"""Event names come from one list (contracts.names.EventType, whose names are EVENT_TYPES): the
routing kinds, the relayed events and their descriptions, and the domain's event classes agree
with it."""

from __future__ import annotations

from contracts.names import EVENT_KINDS, EVENT_TYPES, kind_of
from shared.eventstore.export import EVENT_TYPES as DOMAIN_EVENTS
from shared.outbox import KINDS
from shared.publishing import DESCRIPTIONS


def test_every_domain_event_but_quarantined_is_in_the_list() -> None:
    assert set(DOMAIN_EVENTS) - {"Quarantined"} == set(EVENT_TYPES)


def test_kinds_are_derived_and_the_relayed_ones_are_described() -> None:
    assert kind_of("AttemptFailed") == "attempt_failed" and kind_of("Requeued") == "requeued"
    assert set(KINDS.values()) <= set(EVENT_KINDS)
    assert set(DESCRIPTIONS) == set(KINDS.values())
    assert len(set(EVENT_KINDS)) == len(EVENT_TYPES)
