"""The wire contracts are strict and bounded."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from contracts.messages import MAX_DEPTH, CancelJob, SubmitJob, SubmitJobMessage
from contracts.names import Topology


def test_unknown_fields_are_rejected_and_named() -> None:
    with pytest.raises(ValidationError) as info:
        SubmitJob.model_validate({"type": "cpu.hash", "payload": {}, "colour": "red"})
    assert info.value.errors()[0]["loc"] == ("colour",)


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", 10), ("priority", -1), ("max_attempts", 0), ("timeout_s", 0), ("type", "1bad")],
)
def test_out_of_range_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        SubmitJob.model_validate({"type": "cpu.hash", "payload": {}, field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_deep_nesting_and_huge_payloads_are_rejected() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(MAX_DEPTH + 2):
        node["d"] = {}
        node = node["d"]  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="nested deeper"):
        SubmitJob(type="t", payload=deep)
    with pytest.raises(ValidationError, match="bytes"):
        SubmitJob(type="t", payload={"blob": ["x" * 1000] * 1100})


def test_an_envelope_round_trips_through_json() -> None:
    message = SubmitJobMessage(correlation_id="c1", data=SubmitJob(type="t", payload={"a": [1]}))
    assert SubmitJobMessage.model_validate_json(message.model_dump_json()) == message


def test_an_envelope_of_another_schema_version_is_rejected() -> None:
    raw = {"correlation_id": "c", "schema_version": 2, "data": {"job_id": str(uuid.uuid4())}}
    with pytest.raises(ValidationError) as info:
        SubmitJobMessage.model_validate(raw)
    assert ("schema_version",) in [e["loc"] for e in info.value.errors()]
    assert CancelJob(job_id=uuid.uuid4()).reason is None


def test_names_live_under_one_prefix() -> None:
    names = Topology("jt-x")
    assert names.events_exchange == "jt-x.events"
    assert names.work_queue("cpu") == "jt-x.work.cpu"
    assert Topology.event_key("scheduled", "cpu") == "job.scheduled.cpu"
    with pytest.raises(ValueError):
        names.work_queue("a.b")
    with pytest.raises(ValueError):
        Topology("Bad Prefix")


@pytest.mark.parametrize(
    "run_at", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1999-12-31T23:59:59Z"]
)
def test_a_run_at_out_of_range_is_refused_also_in_a_message(run_at: str) -> None:
    raw = {"correlation_id": "c", "data": {"type": "cpu.hash", "run_at": run_at}}
    with pytest.raises(ValidationError) as info:
        SubmitJobMessage.model_validate(raw)
    assert [e["loc"] for e in info.value.errors()] == [("data", "run_at")]
    assert SubmitJob.model_validate({"type": "t", "run_at": "2000-01-01T00:00:00Z"}).run_at


def test_a_submission_message_names_its_tenant_or_belongs_to_the_default_one() -> None:
    from contracts.messages import SubmitJobMessage

    job = {"type": "cpu.hash", "payload": {"text": "x"}}
    plain = SubmitJobMessage.model_validate({"correlation_id": "c", "data": job})
    acme = SubmitJobMessage.model_validate({"correlation_id": "c", "data": job, "tenant": "acme"})
    assert (plain.tenant, acme.tenant) == ("default", "acme")
    for bad in ("", "Acme", "a b", "x" * 64, "-lead"):
        with pytest.raises(ValidationError, match="tenant"):
            SubmitJobMessage.model_validate({"correlation_id": "c", "data": job, "tenant": bad})
