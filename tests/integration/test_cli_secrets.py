"""The CLI never prints a password when the log cannot be opened (cron logs of verify, audit,
archive, state ...): the URL is shown as ``postgresql://user:***@host/db``."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from services.cli.app import app

runner = CliRunner()
SECRET = "S3cret-pw-4711"
JOB = str(uuid.uuid4())
COMMANDS = [
    ["verify", "--no-redis"],
    ["audit", "--since", "2026-01-01T00:00:00Z"],
    ["audit", JOB],
    ["state", JOB],
    ["archive", "--before", "2020-01-01T00:00:00Z"],
    ["checkpoint"],
    ["replay", "--job", JOB],
    ["db", "grant", "somebody"],
]


def urls(postgres_url: str) -> dict[str, tuple[str, str]]:
    """Each URL with a password, and how it must be shown."""
    server = urlsplit(postgres_url)
    return {
        "refused": (
            f"postgresql://postgres:{SECRET}@127.0.0.1:1/jobtrail",
            "postgresql://postgres:***@127.0.0.1:1/jobtrail",
        ),
        "wrong role": (
            f"postgresql://jt_nobody:{SECRET}@{server.hostname}:{server.port or 5432}/postgres",
            f"postgresql://jt_nobody:***@{server.hostname}:{server.port or 5432}/postgres",
        ),
    }


@pytest.mark.parametrize("where", ["refused", "wrong role"])
@pytest.mark.parametrize(
    "args", COMMANDS, ids=[" ".join(a[:2]).replace(JOB, "JOB") for a in COMMANDS]
)
def test_no_password_is_printed_when_the_log_cannot_be_opened(
    postgres_url: str, where: str, args: list[str]
) -> None:
    # Given a URL with a password that cannot open the log
    url, shown = urls(postgres_url)[where]
    env: dict[str, Any] = {
        "JOBTRAIL_POSTGRES_URL": url,
        "JOBTRAIL_POSTGRES_CONNECT_TIMEOUT_S": "1",
        "JOBTRAIL_CHECKPOINT_FILE": None,
        "COLUMNS": "300",
    }

    # When a command needs the log
    result = runner.invoke(app, args, env=env)

    # Then it fails, saying so, and the password is nowhere in what it printed
    assert result.exit_code != 0, result.output
    assert SECRET not in result.output
    assert "Traceback" not in result.output
    if "cannot read the log at" in result.output:
        assert shown in " ".join(result.output.split())
