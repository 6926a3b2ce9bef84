"""The CLI's two consoles and its one way of stopping with a message."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from shared.redact import redact

console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Prints ``error: message`` on stderr, never with a password (shared.redact); returns the
    Exit to raise (code 2: fix the input)."""
    err.print(f"[red]error:[/red] {escape(redact(message))}")
    return typer.Exit(code)


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (driver errors run to many lines)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
