"""``jobtrail db init`` and ``jobtrail db grant``: the schema and the roles (run as the owner).

The services never need the owner: ``db init`` creates what they use, ``db grant`` lets a role
read and append the log (or, for auditors, only read it). compose runs both once as ``init``.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from services.cli.console import console, fail
from services.cli.database import connect, settings
from services.cli.roles import RoleError, ensure_role
from shared.eventstore import JobStore, ensure_database
from shared.eventstore.schema import grant
from shared.keys import create_table

db_app = typer.Typer(help="Database roles and schema (run as the owner of the log).")


@db_app.command(name="init")
def db_init() -> None:
    """Creates the database, tables and append-only triggers (as the owner)."""
    owner = settings()
    ensure_database(owner.postgres_url)
    JobStore(owner.model_copy(update={"postgres_create_schema": True})).close()
    with connect() as conn:
        create_table(conn)
    console.print(
        "schema ready: events (append-only), checkpoints, timers, leases, positions, API keys"
    )


@db_app.command(name="grant")
def db_grant(
    role: Annotated[str, typer.Argument(help="an existing login role")],
    read_only: Annotated[bool, typer.Option("--read-only", help="an auditor: SELECT only")] = False,
    create: Annotated[
        bool,
        typer.Option(
            "--create",
            help="create ROLE (LOGIN) when missing, with JOBTRAIL_SERVICE_ROLE_PASSWORD",
        ),
    ] = False,
) -> None:
    """Lets ROLE run the services (read and append history, never change or delete it), or,
    with --read-only, read everything and write nothing (auditors)."""
    with connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if create and not read_only:
            password = os.environ.get("JOBTRAIL_SERVICE_ROLE_PASSWORD")
            if not password:
                raise fail("--create: set JOBTRAIL_SERVICE_ROLE_PASSWORD to the role's password", 2)
            try:
                ensure_role(conn, role, password)
            except RoleError as exc:
                raise fail(str(exc), 2) from None
        elif not exists:
            raise fail(f"role {role!r} does not exist (CREATE ROLE ... LOGIN first)", 2)
        grant(conn, role, read_only=read_only)
    console.print(
        f"{role} may {'read' if read_only else 'read and append'} the log; run it with "
        "JOBTRAIL_POSTGRES_CREATE_SCHEMA=false"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
