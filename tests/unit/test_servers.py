"""One table of local servers for the CLI, the tests and scripts/ensure-services.sh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.servers import SERVERS, check_infrastructure
from tests.services import DEFAULTS, START

ROOT = Path(__file__).resolve().parents[2]


def test_the_script_reads_the_table_with_the_standard_library_alone() -> None:
    # When the script's command runs without site-packages (-S: before any virtualenv exists)
    done = subprocess.run(
        [sys.executable, "-S", "-m", "shared.servers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    # Then it prints one line per server: name, URL variable, port, start command
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert rows == [[s.name, s.variable, str(s.port), s.start] for s in SERVERS]
    assert [r[2] for r in rows] == ["5432", "5672", "6379"]
    assert "shared.servers" in (ROOT / "scripts" / "ensure-services.sh").read_text()


def test_the_tests_and_the_cli_use_the_same_table() -> None:
    assert set(DEFAULTS) == set(START) == {s.key for s in SERVERS}
    assert all(START[s.key] == s.start for s in SERVERS)


def test_a_server_that_does_not_answer_is_named_with_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBTRAIL_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on 1
    problems = check_infrastructure(("Redis",))
    assert len(problems) == 1
    assert "Redis does not answer at 127.0.0.1:1" in problems[0]
    assert "redis-server" in problems[0] and "JOBTRAIL_REDIS_URL" in problems[0]
