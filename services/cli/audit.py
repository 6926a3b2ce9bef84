"""``jobtrail audit`` and ``jobtrail state``: history, exports and past states, from the log.

These read PostgreSQL directly (``JOBTRAIL_POSTGRES_URL``), not the HTTP API: an auditor needs
the log whether or not the services run, and a range export streams more events than an HTTP
answer should hold.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.table import Table

from services.cli.console import console, err, fail, first_line
from shared.domain.errors import JobNotFoundError
from shared.eventstore import JobStore
from shared.eventstore.export import (
    EVENT_TYPES,
    RECORD_FIELDS,
    EventExport,
    RangeFilter,
    csv_row,
    job_state,
    state_at_time,
    state_at_version,
)
from shared.redact import redact_url
from shared.settings import StoreSettings

TIME_EXAMPLE = "2026-11-29T09:00:00Z"
ZONED = f"ISO 8601 with a zone, e.g. {TIME_EXAMPLE}"


class Format(StrEnum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time with a zone (a trailing Z is UTC); a CLI error naming ``option`` else."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} {text!r} is not an ISO 8601 time; e.g. {TIME_EXAMPLE}", 2) from None
    if value.tzinfo is None:
        raise fail(f"{option} {text!r} has no time zone; add Z (UTC) or +HH:MM, e.g. {text}Z", 2)
    return value


def parse_job_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise fail(
            f"JOB {text!r} is not a job id (a UUID as printed by `jobtrail submit`)", 2
        ) from None


@contextmanager
def open_store() -> Iterator[JobStore]:
    """A JobStore on JOBTRAIL_POSTGRES_URL; a CLI error saying what to fix when it cannot open."""
    try:
        settings = StoreSettings()
    except ValidationError as exc:
        raise fail(f"JOBTRAIL_POSTGRES_URL: {exc.errors()[0]['msg']}", 2) from None
    try:
        store = JobStore(settings)
    except Exception as exc:  # psycopg's or eventsourcing's connection errors, whichever
        raise fail(
            f"cannot read the log at {redact_url(settings.postgres_url)} ({type(exc).__name__}: "
            f"{first_line(exc)}); check JOBTRAIL_POSTGRES_URL and that PostgreSQL runs"
        ) from None
    try:
        yield store
    finally:
        store.close()


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


def history_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    whole = ("v", "time", "event", "attempt")  # never folded; the others fold to fit
    for column in ("v", "time", "event", "actor", "reason", "attempt", "worker", "error"):
        table.add_column(column, overflow="fold", no_wrap=column in whole)
    for r in records:
        error = f"{r['error_type']}: {r['error_message']}" if r["error_type"] else ""
        table.add_row(
            str(r["version"]),
            r["timestamp"],
            r["event_type"],
            r["actor"],
            r["reason"] or "",
            "" if r["attempt"] is None else str(r["attempt"]),
            r["worker"] or "",
            error,
        )
    return table


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
        since=parse_time(since, "--since") if since else None,
        until=parse_time(until, "--until") if until else None,
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
    when = parse_time(at, "--at") if at is not None else None
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
    view = job_state(folded)
    if as_json:
        sys.stdout.write(json.dumps(view, sort_keys=True) + "\n")
        return
    title = f"at {when.isoformat()}" if when else f"at version {version or folded.version}"
    table = Table(title=f"{job_id} {title}", show_header=False)
    for name, value in view.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(name, shown)
    console.print(table)
