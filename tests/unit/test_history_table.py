"""One history table in the CLI for `jobtrail events` and `jobtrail audit`, over the one record
of an event that the API and the exports give."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from services.cli.render import history_table

AT = "2026-01-02T09:00:00.123456+00:00"
RETRY = "2026-01-02T09:00:05.000000+00:00"


def _text(events: list[dict[str, Any]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(history_table(events, "history of J"))
    return console.export_text()


def test_a_record_shows_its_attempt_error_and_time_in_utc() -> None:
    # Given one AttemptFailed as the API and the exports give it (shared.views.event_record)
    record = {
        "version": 4,
        "event_type": "AttemptFailed",
        "timestamp": AT,
        "actor": "w2",
        "reason": None,
        "attempt": 1,
        "worker": "w2",
        "error_type": "ValueError",
        "error_message": "bad input row 7",
        "data": {
            "attempt": 1,
            "worker_id": "w2",
            "error_type": "ValueError",
            "error_message": "bad input row 7",
            "retry_at": RETRY,
        },
    }

    # When it is rendered
    shown = _text([record])

    # Then the table shows the attempt, the error and the times in UTC, the day in the title
    assert "history of J, 2026-01-02 UTC" in shown
    for text in ("09:00:00.123", "AttemptFailed", "ValueError: bad input row 7", "09:00:05.000"):
        assert text in shown
    assert "worker w2" not in shown  # the worker is the actor


def test_a_history_over_several_days_shows_each_date() -> None:
    later = {"version": 2, "event_type": "Completed", "timestamp": "2026-01-03T10:00:00+00:00"}
    first = {"version": 1, "event_type": "Submitted", "timestamp": AT}
    shown = _text([first | {"actor": "a"}, later | {"actor": "b", "data": {"result": {"x": 1}}}])
    assert "2026-01-02 09:00:00.123" in shown and "2026-01-03 10:00:00.000 " in shown
    assert 'result {"x": 1}' in shown
