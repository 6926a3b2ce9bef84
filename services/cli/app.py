"""``jobtrail``: run the system, submit jobs, read their status and history."""

from __future__ import annotations

import sys

import typer

from services.cli import audit, db, dlq, integrity, jobs, keys, replay, run

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)

GROUPS = (run, jobs, audit, integrity, replay, dlq, db, keys)
"""One module per command group, in the order of ``jobtrail --help``; each has ``register``."""

for group in GROUPS:
    group.register(app)


def main() -> None:
    from shared.redact import install_log_redaction

    install_log_redaction()  # a driver's warning (psycopg_pool's, say) never shows a password
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
