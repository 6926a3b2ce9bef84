"""``jobtrail verify``, ``checkpoint`` and ``archive``: tamper evidence and retention.

These talk to PostgreSQL directly (settings from ``JOBTRAIL_*``), not through the API: an
auditor verifies the log itself, with a key and a checkpoint file the services never see.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.markup import escape

from services.cli.console import console, fail, first_line
from services.cli.database import connect, connected, log_conninfo, open_store
from services.cli.options import parse_time
from shared.redact import redact


def verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="a checkpoint file kept elsewhere (default JOBTRAIL_CHECKPOINT_FILE)"),
    ] = None,
    archive: Annotated[
        list[Path] | None, typer.Option(help="archive file(s) whose histories left the table")
    ] = None,
    log: Annotated[bool, typer.Option(help="check the hash chains and checkpoints")] = True,
    redis: Annotated[bool, typer.Option(help="check Redis against the fold of the events")] = True,
    allow_no_checkpoints: Annotated[
        bool,
        typer.Option(
            "--allow-no-checkpoints",
            help="exit 0 on a log without any checkpoint (a new system); by default that is a "
            "failure: nothing anchors the chains",
        ),
    ] = False,
) -> None:
    """Checks the log's integrity and the Redis view; exits 1 when anything is wrong, and when
    the log has no checkpoint at all (unless --allow-no-checkpoints)."""
    from shared.eventstore.verify import verify_log
    from shared.settings import AuditSettings

    audit = AuditSettings()
    file = checkpoints or audit.checkpoint_file
    archives = archive or []
    for path in ([file] if file else []) + archives:
        if not path.is_file():
            raise fail(f"{path} does not exist", 2)
    failed = False
    if log:
        try:
            report = verify_log(
                log_conninfo(), key=audit.key, checkpoint_file=file, archives=archives
            )
        except ValueError as exc:  # an unreadable checkpoint file line
            raise fail(str(exc), 2) from None
        except psycopg.Error as exc:
            raise fail(f"cannot read the log: {first_line(exc)}") from None
        console.print(
            f"log: {report.jobs} jobs, {report.events} events, "
            f"{report.checkpoints} checkpoints checked"
            + ("" if audit.key else " (no JOBTRAIL_CHECKPOINT_KEY: signatures not checked)")
        )
        for problem in report.problems:
            console.print(f"[red]TAMPERED[/red] {escape(str(problem))}")
        if report.ok and not report.checkpoints:
            console.print(
                f"[{'yellow' if allow_no_checkpoints else 'red'}]NO CHECKPOINT[/]: the chains "
                "are consistent, but no checkpoint anchors them: a deleted last event or a "
                "rewritten chain would go unseen (`jobtrail checkpoint` writes one)"
                + ("" if allow_no_checkpoints else "; --allow-no-checkpoints accepts this")
            )
            failed |= not allow_no_checkpoints
        elif report.ok:
            console.print("[green]log OK[/green]: every chain and checkpoint matches")
        failed |= not report.ok
    if redis:
        failed |= not _verify_redis()
    raise typer.Exit(1 if failed else 0)


def _verify_redis() -> bool:
    """Redis against the fold of each job's events (see shared.drift); True when equal."""
    import asyncio

    from eventsourcing.persistence import OperationalError, ProgrammingError
    from redis.exceptions import RedisError

    from shared.drift import find_drift

    async def run() -> list[Any]:
        async with connected() as (store, view):
            return list(await find_drift(store, view))

    try:
        drifted = asyncio.run(run())
    except (RedisError, OSError) as exc:
        raise fail(f"cannot read Redis (JOBTRAIL_REDIS_URL): {first_line(exc)}") from None
    except (psycopg.Error, OperationalError, ProgrammingError) as exc:
        raise fail(f"cannot read the log: {first_line(exc)}") from None
    except Exception as exc:  # folding raised: an event no longer decodes or applies
        console.print(
            f"[red]DRIFT[/red] the Redis check could not fold the log "
            f"({type(exc).__name__}: {escape(redact(first_line(exc)))}); an event no longer "
            "decodes or applies: `jobtrail verify --no-redis` says where"
        )
        return False
    for drift in drifted:
        fields = ", ".join(f"{k}: redis {r!r} log {v!r}" for k, (r, v) in drift.fields.items())
        console.print(f"[red]DRIFT[/red] job {drift.job_id} {drift.kind}: {escape(fields[:300])}")
    if not drifted:
        console.print("[green]redis OK[/green]: every job in Redis equals the fold of its events")
    return not drifted


def checkpoint() -> None:
    """Writes a checkpoint of the log head now (the projector also does, every interval)."""
    from shared.eventstore.checkpoints import write_checkpoint
    from shared.settings import AuditSettings

    audit = AuditSettings()
    try:
        with connect() as conn:
            mark = write_checkpoint(conn, key=audit.key, file=audit.checkpoint_file)
    except psycopg.Error as exc:
        raise fail(f"checkpoint not written: {first_line(exc)}") from None
    except OSError as exc:
        raise fail(f"checkpoint written to the database, not to the file: {exc}") from None
    if mark is None:
        console.print("no new events since the last checkpoint")
    else:
        console.print(
            f"checkpoint at notification {mark.notification_id} ({mark.events} events): "
            f"{mark.head.hex()}"
            + (f" -> also in {audit.checkpoint_file}" if audit.checkpoint_file else "")
        )


def archive(
    before: Annotated[str, typer.Option(help="archive final jobs finished before this time")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="where archives go (JOBTRAIL_ARCHIVE_DIR)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="jobs per archive")] = 10_000,
) -> None:
    """Moves old final histories to a compressed JSON Lines file with their chain hashes."""
    from shared.eventstore import archive as archiving
    from shared.settings import AuditSettings, RedisSettings

    cutoff = parse_time(before, "--before")
    ttl = RedisSettings().final_ttl_s
    latest = datetime.now(UTC) - timedelta(seconds=ttl)
    if ttl and cutoff > latest:
        raise fail(
            f"--before must be at least JOBTRAIL_FINAL_TTL_S ({ttl} s) ago, so that archived "
            f"jobs have already left Redis; e.g. --before {latest:%Y-%m-%dT%H:%M:%SZ}",
            2,
        )
    target = directory or AuditSettings().archive_dir
    with open_store() as store:
        try:
            done = archiving.archive(store, cutoff, target, limit)
        except (archiving.ArchiveError, psycopg.Error, OSError) as exc:
            raise fail(f"nothing archived: {first_line(exc)}") from None
    if done is None:
        console.print(
            f"no final job finished before {cutoff.isoformat()} and covered by a checkpoint "
            "(`jobtrail checkpoint` writes one)"
        )
        return
    console.print(
        f"archived {done.jobs} jobs ({done.events} events) to {done.data}; manifest "
        f"{done.manifest}. Verify with: jobtrail verify --archive {done.data}"
        + (
            ""
            if ttl
            else "; JOBTRAIL_FINAL_TTL_S is 0: run `jobtrail rebuild` to drop them from Redis"
        )
    )


def register(app: typer.Typer) -> None:
    app.command()(verify)
    app.command()(checkpoint)
    app.command()(archive)
