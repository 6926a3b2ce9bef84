"""`jobtrail rebuild` refuses bad options with a message saying what to fix (no service needed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli.app import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--job", "nope"], "--job 'nope' is not a job id (a UUID"),
        (["--since", "2020-01-01"], "--since '2020-01-01' has no time zone"),
        (["--until", "yesterday"], "--until 'yesterday' is not an ISO 8601 time"),
        (
            ["--since", "2030-01-01T00:00:00Z", "--until", "2020-01-01T00:00:00Z"],
            "--since must be before --until",
        ),
        (["--job", "x", "--since", "2030-01-01T00:00:00Z"], "use either --job or --since/--until"),
    ],
)
def test_bad_replay_options_are_refused_with_what_to_fix(args: list[str], message: str) -> None:
    # Given / When the replay command gets a bad option
    result = CliRunner().invoke(app, ["replay", *args])

    # Then it exits 2 with the message, and no traceback
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
