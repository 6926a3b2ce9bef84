from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import ROWS, scenario

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


@pytest.fixture
def run(postgres_server: str, amqp_url: str, redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Starts a named scenario: a fresh system of its own (database, prefixes, ports)."""

    def start(name: str, **kwargs):  # type: ignore[no-untyped-def]
        return scenario(name, postgres_server, amqp_url, redis_url, tmp_path, **kwargs)

    return start


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
