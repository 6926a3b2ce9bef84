"""``jobtrail keys``: create, list and revoke API keys (run with access to the log's database).

A new key is printed once, alone on the last line, so that a script can take it with
``tail -n 1``; only its SHA-256 is stored. Revoking takes effect on every submitter within a
second (each refreshes its keys from the table: shared/keys.py).
"""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from rich.markup import escape
from rich.table import Table

from services.cli.console import console, fail, first_line
from services.cli.integrity import connect
from shared import keys

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)


def _when(value: object) -> str:
    return "" if value is None else str(value)[:19]


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="the tenant the key's jobs belong to")],
    scopes: Annotated[
        str, typer.Option(help=f"comma-separated, of: {', '.join(keys.SCOPES)}")
    ] = "submit,read,cancel",
    name: Annotated[str, typer.Option(help="what the key is for (shown by keys list)")] = "",
) -> None:
    """Creates a key; prints it once, alone on the last line."""
    try:
        with connect() as conn:
            keys.create_table(conn)
            info, key = keys.create_key(conn, tenant, scopes.split(","), name)
    except keys.KeySpecError as exc:
        raise fail(str(exc), 2) from None
    except psycopg.Error as exc:
        raise fail(f"cannot store the key: {first_line(exc)}") from None
    console.print(
        f"key {info.id} for tenant {escape(info.tenant)}, scopes {','.join(info.scopes)}: "
        "shown once, only its hash is stored"
    )
    print(key)


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None,
) -> None:
    """Every key (never the key itself): id, tenant, name, scopes, created, revoked."""
    try:
        with connect() as conn:
            keys.create_table(conn)
            rows = keys.list_keys(conn, tenant)
    except psycopg.Error as exc:
        raise fail(f"cannot read the keys: {first_line(exc)}") from None
    table = Table("id", "tenant", "name", "scopes", "created", "revoked", title="API keys")
    for info in rows:
        table.add_row(
            info.id,
            escape(info.tenant),
            escape(info.name),
            ",".join(info.scopes),
            _when(info.created_at),
            _when(info.revoked_at),
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the id keys list shows")]) -> None:
    """Revokes a key: refused by every submitter within a second."""
    try:
        with connect() as conn:
            keys.create_table(conn)
            info = keys.revoke_key(conn, key_id)
    except psycopg.Error as exc:
        raise fail(f"cannot revoke the key: {first_line(exc)}") from None
    if info is None:
        raise fail(f"no key with id {key_id!r} (jobtrail keys list shows them)", 2)
    console.print(f"key {info.id} of tenant {escape(info.tenant)} revoked at {info.revoked_at}")
