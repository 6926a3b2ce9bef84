"""CSV exports neutralise cells a spreadsheet would evaluate (OWASP CSV injection)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from services.cli.audit import Format, write_records
from shared.views import RECORD_FIELDS


def a_record(**fields: object) -> dict[str, object]:
    return dict.fromkeys(RECORD_FIELDS) | {"version": 1, "data": {}} | fields


@pytest.mark.parametrize(
    "text",
    ["=1+2", "+1+2", "-1+2", "@SUM(A1)", "\tcmd", "\r=1", '=HYPERLINK("http://x","y")'],
)
def test_a_cell_a_spreadsheet_would_evaluate_gets_a_leading_quote(text: str) -> None:
    out = io.StringIO()
    write_records([a_record(reason=text, error_message=text, actor=text)], Format.csv, out)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert (row["reason"], row["error_message"], row["actor"]) == ("'" + text,) * 3


def test_ordinary_cells_numbers_and_json_lines_stay_verbatim() -> None:
    record = a_record(reason="customer withdrew", notification_id=-1, data={"x": "=1"})
    out = io.StringIO()
    write_records([record], Format.csv, out)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert (row["reason"], row["notification_id"]) == ("customer withdrew", "-1")
    assert json.loads(row["data"]) == {"x": "=1"}  # a JSON object starts with "{": inert
    lines = io.StringIO()
    write_records([a_record(reason="=1+2")], Format.jsonl, lines)
    assert json.loads(lines.getvalue())["reason"] == "=1+2"
