"""``jobtrail audit`` and ``jobtrail state``: history, exports and past states, from the log.

These read PostgreSQL directly (``JOBTRAIL_POSTGRES_URL``), not the HTTP API: an auditor needs
the log whether or not the services run, and a range export streams more events than an HTTP
answer should hold.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO
from uuid import UUID

import typer
from rich.table import Table

from services.cli.console import console, err, fail
from services.cli.database import open_store
from services.cli.options import TIME_EXAMPLE, ZONED, optional_time, parse_job_id
from services.cli.render import history_table
from shared.domain.errors import JobNotFoundError
from shared.eventstore.export import (
    EVENT_TYPES,
    EventExport,
    RangeFilter,
    csv_row,
    state_at_time,
    state_at_version,
)
from shared.views import RECORD_FIELDS, job_view


class Format(StrEnum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


def write_records(records: Iterable[dict[str, Any]], fmt: Format, out: TextIO) -> int:
    """Writes records as JSON lines (verbatim) or CSV (``data`` as a JSON column, cells that a
    spreadsheet would evaluate made inert: ``csv_row``); returns how many."""
    count = 0
    if fmt is Format.csv:
        writer = csv.DictWriter(out, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        for record in records:
            writer.writerow(csv_row(record))
            count += 1
    else:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def _export(records: Iterable[dict[str, Any]], fmt: Format, output: Path | None) -> None:
    if output is None:
        count = write_records(records, fmt, sys.stdout)
    else:
        with output.open("w", newline="", encoding="utf-8") as out:
            count = write_records(records, fmt, out)
    err.print(f"exported {count} event(s){f' to {output}' if output else ''}")


def audit(
    job: Annotated[str | None, typer.Argument(help="a job id: that job's whole history")] = None,
    since: Annotated[
        str | None,
        typer.Option(help=f"range start, inclusive ({ZONED})"),
    ] = None,
    until: Annotated[str | None, typer.Option(help=f"range end, exclusive ({ZONED})")] = None,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", help=f"only these event types (repeat): {', '.join(EVENT_TYPES)}"),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="only events by this actor (exact)")] = None,
    fmt: Annotated[
        Format | None,
        typer.Option("--format", help="table (one job's default), jsonl (range default), csv"),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="write the export here, not stdout")] = None,
    archive: Annotated[
        list[Path] | None,
        typer.Option(
            help="archive file(s) to read a job's history from when it left the log "
            "(default: every archive in JOBTRAIL_ARCHIVE_DIR)"
        ),
    ] = None,
) -> None:
    """A job's history (table, jsonl, csv), or every event in a time range across all jobs."""
    is_range = since is not None or until is not None or event_type or actor is not None
    if job is not None and is_range:
        raise fail("give a JOB, or a range (--since/--until/--type/--actor), not both", 2)
    if job is None and since is None and until is None:
        raise fail(f"give a JOB, or a range: --since {TIME_EXAMPLE} [--until ...]", 2)
    fmt = fmt or (Format.table if job is not None else Format.jsonl)
    if fmt is Format.table and (job is None or output is not None):
        raise fail("--format table shows one job on the screen; use --format jsonl or csv", 2)
    if job is not None:
        job_id = parse_job_id(job)
        title = f"history of {job_id}"
        with open_store() as store:
            try:
                records = EventExport(store).job_records(job_id)
            except JobNotFoundError as exc:
                records, title = (
                    _from_archives(EventExport(store), job_id, archive, exc),
                    (f"history of {job_id} (archived)"),
                )
        if fmt is Format.table:
            console.print(history_table(records, title))
        else:
            _export(records, fmt, output)
        return
    unknown = sorted(set(event_type or ()) - set(EVENT_TYPES))
    if unknown:
        raise fail(f"--type {', '.join(unknown)}: unknown; known: {', '.join(EVENT_TYPES)}", 2)
    where = RangeFilter(
        since=optional_time(since, "--since"),
        until=optional_time(until, "--until"),
        types=tuple(event_type or ()),
        actor=actor,
    )
    if where.since and where.until and where.since >= where.until:
        raise fail("--since must be before --until (the range is since <= time < until)", 2)
    with open_store() as store:
        _export(EventExport(store).range_records(where), fmt, output)


def _from_archives(
    export: EventExport, job_id: UUID, given: list[Path] | None, missing: JobNotFoundError
) -> list[dict[str, Any]]:
    """A job that left the log: its history from the archives, or a CLI error saying where we
    looked."""
    from shared.settings import AuditSettings

    directory = AuditSettings().archive_dir
    paths = given or sorted(directory.glob("*.jsonl.gz"))
    for path in paths:
        if not path.is_file():
            raise fail(f"--archive {path} does not exist", 2)
    try:
        records, problems = export.archived_job_records(job_id, paths)
    except JobNotFoundError:
        where = f"{len(paths)} archive file(s)" if paths else f"archives (none in {directory})"
        raise fail(f"{missing} in the log nor in {where}") from None
    for problem in problems:
        err.print(f"[red]warning:[/red] {problem}")
    return records


def state(
    job: Annotated[str, typer.Argument(help="a job id")],
    at: Annotated[
        str | None,
        typer.Option(help=f"as it was at this time ({ZONED})"),
    ] = None,
    version: Annotated[int | None, typer.Option(help="as it was after its first N events")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
) -> None:
    """The job as it was at a time or a version (now, without either), folded from the log."""
    if at is not None and version is not None:
        raise fail("give --at or --version, not both", 2)
    if version is not None and version < 1:
        raise fail(f"--version {version}: versions start at 1", 2)
    job_id = parse_job_id(job)
    when = optional_time(at, "--at")
    with open_store() as store:
        try:
            if version is not None:
                folded = state_at_version(store, job_id, version)
            elif when is not None:
                folded = state_at_time(store, job_id, when)
            else:
                folded = store.get(job_id)
        except JobNotFoundError as exc:
            raise fail(str(exc)) from None
    view = job_view(folded)
    if as_json:
        sys.stdout.write(json.dumps(view, sort_keys=True) + "\n")
        return
    title = f"at {when.isoformat()}" if when else f"at version {version or folded.version}"
    table = Table(title=f"{job_id} {title}", show_header=False)
    for name, value in view.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(name, shown)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command(name="audit")(audit)
    app.command(name="state")(state)
