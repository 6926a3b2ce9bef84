"""Every `jobtrail` command and option of before the CLI became a package still answers; a
renamed command keeps its old spelling (`dlq replay` -> `dlq republish`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli.app import app

COMMANDS = {
    "up": ["--workers"],
    "demo": ["--jobs", "--workers", "--keep"],
    "submit": ["--payload", "--priority", "--max-attempts", "--run-at", "--key"],
    "status": [],
    "events": [],
    "list": ["--status", "--limit"],
    "cancel": ["--reason"],
    "requeue": ["--reason", "--attempts"],
    "audit": ["--since", "--until", "--type", "--actor", "--format", "--output", "--archive"],
    "state": ["--at", "--version", "--json"],
    "verify": ["--checkpoints", "--archive", "--log", "--redis", "--allow-no-checkpoints"],
    "checkpoint": [],
    "archive": ["--before", "--dir", "--limit"],
    "rebuild": ["--job", "--since", "--until", "--batch"],
    "replay": ["--job", "--since", "--until", "--batch"],
    "dlq list": ["--limit"],
    "dlq recorded": ["--job", "--limit"],
    "dlq quarantined": ["--job", "--limit"],
    "dlq republish": ["--message-id"],
    "dlq replay": ["--message-id"],
    "db init": [],
    "db grant": ["--read-only", "--create"],
    "keys create": ["--tenant", "--scopes", "--name"],
    "keys list": ["--tenant"],
    "keys revoke": [],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_and_option_answers(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in COMMANDS[command]:
        assert option in result.output, f"{command}: {option}"
