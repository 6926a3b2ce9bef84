"""The committed AsyncAPI and OpenAPI documents match the code."""

from __future__ import annotations

import json

import pytest

from services import specs


@pytest.mark.parametrize("name", ["asyncapi", "openapi"])
def test_the_committed_document_matches_the_code(name: str) -> None:
    path = specs.ASYNCAPI if name == "asyncapi" else specs.OPENAPI
    generated = specs.asyncapi() if name == "asyncapi" else specs.openapi()
    assert json.loads(path.read_text()) == json.loads(specs.render(generated)), (
        f"{path.name} is out of date: run `python -m services.specs`"
    )


def test_every_service_channel_is_documented_with_its_message_schema() -> None:
    document = specs.asyncapi()
    channels = set(document["channels"])
    assert {
        "submitter.submit-job",
        "scheduler.job-events",
        "worker.cpu",
        "relay.scheduled",
    } <= channels
    schemas = document["components"]["schemas"]
    assert "JobEvent" in schemas and "SubmitJob" in schemas
    assert schemas["SubmitJob"]["additionalProperties"] is False


def test_check_mode_reports_a_stale_document(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "asyncapi.json"
    stale.write_text("{}")
    monkeypatch.setattr(specs, "ASYNCAPI", stale)
    assert specs.main(["--check"]) == 1
