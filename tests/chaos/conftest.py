from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.chaos.harness import ROWS

COLUMNS = (
    "scenario",
    "submitted",
    "acknowledged",
    "faults",
    "lost",
    "duplicated",
    "illegal",
    "drift",
    "chain",
    "executions",
    "extra executions",
    "unexplained",
    "503s",
)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    text = table(ROWS)
    terminalreporter.write_sep("=", "reliability")
    terminalreporter.write_line(text)
    report = os.environ.get("JOBTRAIL_CHAOS_REPORT")
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(text + "\n")
