"""``jobtrail keys``: create, list and revoke API keys (run with access to the log's database).

A new key is printed once, alone on the last line, so that a script can take it with
``tail -n 1``; only its SHA-256 is stored. Revoking takes effect on every submitter within a
second (each refreshes its keys from the table: shared/keys.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
import typer
from rich.markup import escape
from rich.table import Table

from services.cli.console import console, fail, first_line
from services.cli.database import connect
from shared import keys

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)


@contextmanager
def _keys_table(doing: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the log's database with the key table there; a database error ends the
    command saying what could not be done."""
    try:
        with connect() as conn:
            keys.create_table(conn)
            yield conn
    except psycopg.Error as exc:
        raise fail(f"cannot {doing}: {first_line(exc)}") from None


def _date(value: object) -> str:
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
        with _keys_table("store the key") as conn:
            info, key = keys.create_key(conn, tenant, scopes.split(","), name)
    except keys.KeySpecError as exc:
        raise fail(str(exc), 2) from None
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
    with _keys_table("read the keys") as conn:
        rows = keys.list_keys(conn, tenant)
    table = Table("id", "tenant", "name", "scopes", "created", "revoked", title="API keys")
    for info in rows:
        table.add_row(
            info.id,
            escape(info.tenant),
            escape(info.name),
            ",".join(info.scopes),
            _date(info.created_at),
            _date(info.revoked_at),
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the id keys list shows")]) -> None:
    """Revokes a key: refused by every submitter within a second."""
    with _keys_table("revoke the key") as conn:
        info = keys.revoke_key(conn, key_id)
    if info is None:
        raise fail(f"no key with id {key_id!r} (jobtrail keys list shows them)", 2)
    console.print(f"key {info.id} of tenant {escape(info.tenant)} revoked at {info.revoked_at}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
