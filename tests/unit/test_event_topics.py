"""A row of the log imports nothing but the job's own event classes: a topic that names another
module, or a created event that names another aggregate class, is refused before any import."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import TopicError

from shared.domain import Job
from shared.eventstore.store import JobLog
from tests.jobs import CAUSE

PLANTED = "import builtins\nbuiltins.jobtrail_planted_ran = True\nclass Thing:\n    pass\n"


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module whose import has a visible side effect."""
    name = f"planted_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(PLANTED)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def ran(name: str) -> bool:
    import builtins

    return name in sys.modules or getattr(builtins, "jobtrail_planted_ran", False)


def test_a_row_naming_another_module_is_refused_without_importing_it(planted: str) -> None:
    mapper = JobLog().mapper
    row = StoredEvent(
        originator_id=uuid.uuid4(), originator_version=1, topic=f"{planted}:Thing", state=b"{}"
    )

    with pytest.raises(TopicError, match="not a job event"):
        mapper.to_domain_event(row)

    assert not ran(planted)


def test_a_created_event_naming_another_aggregate_is_refused_without_importing_it(
    planted: str,
) -> None:
    mapper = JobLog().mapper
    job = Job.submit(CAUSE, job_type="t", payload={}, job_id=uuid.uuid4())
    stored = mapper.to_stored_event(job.collect_events()[0])
    state = json.loads(stored.state)
    state["originator_topic"] = f"{planted}:Thing"
    forged = StoredEvent(
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=json.dumps(state).encode(),
    )

    with pytest.raises(TopicError, match="not a job"):
        mapper.to_domain_event(forged).mutate(None)  # type: ignore[attr-defined]

    assert not ran(planted)


def test_every_job_event_still_reads_back() -> None:
    mapper = JobLog().mapper
    job = Job.submit(CAUSE, job_type="t", payload={"n": 1}, job_id=uuid.uuid4())
    job.request_cancel(CAUSE)
    events = job.collect_events()

    back = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in events]

    assert [type(e) for e in back] == [type(e) for e in events]
    assert back[0].__dict__ == events[0].__dict__
