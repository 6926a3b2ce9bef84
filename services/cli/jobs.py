"""``jobtrail submit``, ``status``, ``events``, ``list``, ``cancel``, ``requeue``: jobs via the API.

These talk to the submitter's HTTP API (``JOBTRAIL_API_URL``) with the CLI's key
(``JOBTRAIL_API_KEY``, else .jobtrail/api-key): what any client of the API may do.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from services.cli.client import call
from services.cli.console import console, fail
from services.cli.render import dead_letter_table, history_table

STATUS_FIELDS = (
    "id",
    "type",
    "status",
    "attempt",
    "max_attempts",
    "version",
    "queue",
    "worker",
    "created_at",
    "updated_at",
    "result",
    "error",
    "progress",
    "source",
)


def job_body(
    job_type: str,
    payload: str,
    priority: int | None,
    max_attempts: int | None,
    run_at: str | None,
    key: str | None,
) -> dict[str, Any]:
    """The request body of a submission, from the command line's options."""
    try:
        body: dict[str, Any] = {"type": job_type, "payload": json.loads(payload)}
    except json.JSONDecodeError as exc:
        raise fail(
            f'--payload is not JSON ({exc}); example: --payload \'{{"text": "hi"}}\'', 2
        ) from None
    for name, value in (
        ("priority", priority),
        ("max_attempts", max_attempts),
        ("run_at", run_at),
        ("idempotency_key", key),
    ):
        if value is not None:
            body[name] = value
    return body


def submit(
    job_type: Annotated[str, typer.Argument(help="a registered job type, e.g. cpu.hash")],
    payload: Annotated[str, typer.Option(help="the payload as JSON")] = "{}",
    priority: Annotated[int | None, typer.Option(min=0, max=9)] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1)] = None,
    run_at: Annotated[
        str | None, typer.Option(help="ISO time with zone, e.g. 2030-01-01T09:00:00+00:00")
    ] = None,
    key: Annotated[str | None, typer.Option(help="idempotency key")] = None,
) -> None:
    """Submits one job and prints its id."""
    body = job_body(job_type, payload, priority, max_attempts, run_at, key)
    console.print(call(lambda client: client.submit(body))["id"])


def status(job_id: str) -> None:
    """Prints a job's current status."""
    job = call(lambda client: client.status(job_id))
    table = Table(show_header=False)
    for name in STATUS_FIELDS:
        value = job.get(name)
        table.add_row(name, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


def events(job_id: str) -> None:
    """Prints a job's whole history from the event log, and its dead letters if any."""
    history, letters = call(lambda client: (client.events(job_id), client.dead_letters(job_id)))
    console.print(history_table(history, f"history of {job_id}"))
    if letters:
        console.print(dead_letter_table(letters, f"dead letters naming {job_id}"))


def list_jobs(
    status: Annotated[str | None, typer.Option(help="PENDING, RUNNING, COMPLETED ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """Lists the newest jobs."""
    page = call(lambda client: client.list(status, limit))
    table = Table()
    for column in ("id", "type", "status", "attempt", "updated_at"):
        table.add_column(column)
    for job in page["jobs"]:
        table.add_row(
            job["id"], job["type"], job["status"], str(job["attempt"]), job["updated_at"] or ""
        )
    console.print(table)


def cancel(job_id: str, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Cancels a job (a running one stops when its worker acknowledges)."""
    job = call(lambda client: client.cancel(job_id, reason))
    console.print(
        f"{job_id}: {job['status']}{' (cancel requested)' if job['cancel_requested'] else ''}"
    )


def requeue(
    job_id: str,
    reason: Annotated[str, typer.Option(help="why it runs again (recorded in its history)")],
    attempts: Annotated[int, typer.Option(min=1, max=100, help="attempts to add")] = 1,
) -> None:
    """Gives a FAILED job more attempts; recorded with your API key as the actor
    (JOBTRAIL_API_KEY, else .jobtrail/api-key) and the reason."""
    job = call(lambda client: client.requeue(job_id, reason, attempts))
    console.print(
        f"{job_id}: {job['status']} (attempt {job['attempt']} of {job['max_attempts']} made)"
    )


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(status)
    app.command()(events)
    app.command(name="list")(list_jobs)
    app.command()(cancel)
    app.command()(requeue)
