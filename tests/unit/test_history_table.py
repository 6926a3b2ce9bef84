"""One history table in the CLI: `jobtrail events` (API events) and `jobtrail audit` (export
records) render the same event the same way."""

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


def test_an_api_event_and_an_export_record_render_alike() -> None:
    # Given one AttemptFailed as the API shows it (its fields in data) and as an export record
    api = {
        "version": 4,
        "event_type": "AttemptFailed",
        "timestamp": AT,
        "actor": "w2",
        "reason": None,
        "data": {
            "attempt": 1,
            "worker_id": "w2",
            "error_type": "ValueError",
            "error_message": "bad input row 7",
            "retry_at": RETRY,
        },
    }
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
        "data": {"retry_at": RETRY},
    }

    # When each is rendered
    shown = _text([api])

    # Then both tables are the same, with the attempt, the error and the time in UTC
    assert shown == _text([record])
    assert "history of J, 2026-01-02 UTC" in shown
    for text in ("09:00:00.123", "AttemptFailed", "ValueError: bad input row 7", "09:00:05.000"):
        assert text in shown


def test_a_history_over_several_days_shows_each_date() -> None:
    later = {"version": 2, "event_type": "Completed", "timestamp": "2026-01-03T10:00:00+00:00"}
    first = {"version": 1, "event_type": "Submitted", "timestamp": AT}
    shown = _text([first | {"actor": "a"}, later | {"actor": "b", "data": {"result": {"x": 1}}}])
    assert "2026-01-02 09:00:00.123" in shown and "2026-01-03 10:00:00.000 " in shown
    assert 'result {"x": 1}' in shown
