"""Nothing the domain accepts can become a poison message: the cause and the job refuse, when
the event is made, every value the bus contract or AMQP would refuse when it is relayed."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.envelope import Envelope
from contracts.messages import SubmitJob
from shared.domain import Cause, Job, Status
from shared.domain.cause import MAX_MESSAGE_ID, printable
from shared.outbox import PoisonEventError, to_message
from shared.views import delta_view, full_view
from tests.jobs import CAUSE, job_in, unchecked_cause


def scheduled(cause: Cause, **submit: Any) -> Job.Event:
    """The Scheduled event of a job submitted and dispatched with ``cause`` (a relayed kind)."""
    job = Job.submit(cause, job_type="t", payload={}, **submit)
    assert job.dispatch_if_due(cause)
    _, event = job.collect_events()
    return event  # type: ignore[no-any-return]


def test_the_domain_bound_is_the_envelope_bound() -> None:
    for name in ("correlation_id", "causation_id"):
        bounds = [getattr(m, "max_length", None) for m in Envelope.model_fields[name].metadata]
        assert MAX_MESSAGE_ID in bounds


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"correlation_id": "c" * 129}, "correlation_id"),
        ({"causation_id": "r" * 129}, "causation_id"),
        ({"causation_id": "r" * 5000}, "causation_id"),
        ({"correlation_id": ""}, "correlation_id"),
        ({"correlation_id": "é" * 100}, "correlation_id"),  # 200 bytes as AMQP's short string
        ({"causation_id": "line\nbreak"}, "causation_id"),
        ({"actor": "a" * 201}, "actor"),
        ({"actor": "api:\ud800"}, "actor"),
        ({"reason": "x" * 1025}, "reason"),
        ({"reason": "file \udcff.txt"}, "reason"),
    ],
)
def test_a_cause_refuses_what_a_message_could_not_carry(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Cause(**{**CAUSE.meta(), **fields})


@settings(max_examples=300, deadline=None)
@given(
    correlation=st.text(min_size=0, max_size=140),
    causation=st.none() | st.text(min_size=0, max_size=140),
)
def test_every_cause_the_domain_accepts_can_be_relayed(
    correlation: str, causation: str | None
) -> None:
    try:
        cause = Cause("api:anyone", correlation, causation)
    except ValueError:
        return
    message = to_message(1, scheduled(cause))
    assert message is not None and json.loads(message.body)["causation_id"] == causation


@pytest.mark.parametrize(
    "fields",
    [{"causation_id": "r" * 129}, {"causation_id": "r" * 5000}, {"correlation_id": "é" * 128}],
)
def test_an_event_that_cannot_be_a_message_is_poison_not_a_transient_failure(
    fields: dict[str, Any],
) -> None:
    # Given a Scheduled event recorded around the checks (as a row from older code could be)
    event = scheduled(unchecked_cause(**fields))
    # When the relay builds its message, Then the failure says it can never succeed
    with pytest.raises(PoisonEventError):
        to_message(1, event)


def test_a_queue_name_that_cannot_route_is_refused_when_submitted() -> None:
    with pytest.raises(ValueError, match="queue"):
        Job.submit(CAUSE, job_type="t", payload={}, queue="Not A Queue")


@pytest.mark.parametrize(
    ("document", "field", "where"),
    [
        ({"type": "t", "payload": {"name": "\ud800"}}, "payload", "name"),
        ({"type": "t", "payload": {"a": [1, {"b": "x\udfff"}]}}, "payload", "a[1].b"),
        ({"type": "t", "payload": {"\ud800": 1}}, "payload", ""),
        ({"type": "t", "idempotency_key": "k\ud800"}, "idempotency_key", ""),
    ],
)
def test_text_that_is_not_valid_unicode_is_refused_and_named(
    document: dict[str, Any], field: str, where: str
) -> None:
    # Given a body parsed by Python's json (which lets "\ud800" escapes through)
    raw = json.loads(json.dumps(document))
    # When it is validated, Then the field is named, and the place in the payload too
    with pytest.raises(ValidationError) as info:
        SubmitJob.model_validate(raw)
    error = info.value.errors()[0]
    assert error["loc"][0] == field
    assert where in error["msg"] or where in printable(".".join(str(p) for p in error["loc"]))


@pytest.mark.parametrize("status", [Status.PENDING, Status.SCHEDULED])
def test_the_projection_of_a_quarantine_equals_the_fold(status: Status) -> None:
    # Given a job's Redis fields before its Quarantined event
    job = job_in(status)
    before = full_view(job)
    job.quarantine(CAUSE, version=job.version, notification_id=9, error="causation_id too long")
    (event,) = job.collect_events()
    # When the projection applies the event's delta, Then it equals the job folded from the log
    changes = delta_view(event)
    assert changes is not None and before | changes == full_view(job)


def test_a_consumer_cause_replaces_ids_it_could_not_carry_instead_of_refusing_the_message() -> None:
    # Given a message relayed by an older version whose correlation id the cause now refuses
    message_id = str(uuid4())
    # When a consumer makes the cause of what it records for it
    legacy = Cause.following("worker:w1", "café\t", message_id)
    long_id = Cause.following("worker:w1", "c" * 129, "m" * 129)
    fine = Cause.following("worker:w1", "client-7", message_id)
    # Then the message id stands in for the correlation id, and a good one is kept
    assert (legacy.correlation_id, legacy.causation_id) == (message_id, message_id)
    assert long_id.correlation_id == long_id.causation_id and len(long_id.causation_id) == 64
    assert (fine.correlation_id, fine.causation_id) == ("client-7", message_id)
    with pytest.raises(ValueError, match="correlation_id"):
        Cause("worker:w1", "café\t", message_id)
