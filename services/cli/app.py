"""``jobtrail``: run the system, submit jobs, read their status and history."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli import audit
from services.cli import integrity as integrity_cli
from services.cli import keys as keys_cli
from services.cli.client import LOCAL_KEY_FILE, ApiError, Client
from services.cli.console import console
from services.cli.console import fail as _fail
from services.cli.supervisor import Supervisor
from shared.domain.status import TERMINAL

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)

INFRA = {
    "PostgreSQL": (
        "JOBTRAIL_POSTGRES_URL",
        "postgresql://postgres@127.0.0.1:5432/jobtrail",
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    ),
    "RabbitMQ": (
        "JOBTRAIL_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/",
        "rabbitmq-server -detached",
    ),
    "Redis": (
        "JOBTRAIL_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        'redis-server --daemonize yes --port 6379 --save "" --appendonly no',
    ),
}


def check_infrastructure(names: tuple[str, ...] = tuple(INFRA)) -> list[str]:
    """Names what does not answer, with how to start it; an empty list when all answer."""
    problems = []
    for name in names:
        variable, default, start = INFRA[name]
        url = urlsplit(os.environ.get(variable, default))
        port = url.port or {"postgresql": 5432, "amqp": 5672, "redis": 6379}.get(url.scheme, 0)
        try:
            with socket.create_connection((url.hostname or "127.0.0.1", port), timeout=2):
                pass
        except OSError:
            problems.append(
                f"{name} does not answer at {url.hostname}:{port}. Start it (`{start}`), "
                f"or point {variable} at a running one."
            )
    return problems


def local_key() -> str:
    """The API key of this machine's CLI: JOBTRAIL_API_KEY when set; else the one in
    .jobtrail/api-key while it is live; else a new admin key of the default tenant, written
    there (mode 0600) for the CLI's later commands. The key itself is never printed."""
    from shared import keys
    from shared.postgres import connect
    from shared.settings import StoreSettings

    given = os.environ.get("JOBTRAIL_API_KEY", "").strip()
    if given:
        return given
    with connect(StoreSettings()) as conn:
        keys.create_table(conn)
        ring = keys.KeyRing()
        ring.refresh(conn, full=True)
        if LOCAL_KEY_FILE.is_file():
            known = LOCAL_KEY_FILE.read_text().strip()
            if ring.check(known) is not None:
                return known
        info, key = keys.create_key(conn, "default", ["admin"], name="local (jobtrail up/demo)")
    LOCAL_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOCAL_KEY_FILE.touch(mode=0o600)
    LOCAL_KEY_FILE.write_text(key + "\n")
    console.print(f"created API key {info.id} (tenant default, admin) in {LOCAL_KEY_FILE}")
    return key


def _service_environment() -> dict[str, str]:
    """The services' environment: they run as the service role, not as the owner (roles.py)."""
    from services.cli.roles import RoleError, role_name, service_environment

    try:
        env = service_environment()
    except RoleError as exc:
        raise _fail(str(exc), 2) from None
    console.print(f"services run as PostgreSQL role {role_name(env)} (JOBTRAIL_SERVICE_ROLE)")
    return env


@app.command()
def up(
    workers: Annotated[int, typer.Option(min=1, max=64, help="worker processes")] = 1,
) -> None:
    """Runs projector, scheduler, worker(s) and submitter as processes; restarts one that dies."""
    problems = check_infrastructure()
    if problems:
        raise _fail("\n".join(problems), 2)
    env = _service_environment()  # the database, its schema and the service role
    local_key()
    supervisor = Supervisor(workers=workers, env=env)
    signal.signal(signal.SIGTERM, lambda *_: supervisor._stopping.set())
    supervisor.start()
    console.print(f"jobtrail is up: API on {Client().http.base_url} (Ctrl-C stops it)")
    try:
        supervisor.run_until_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping...")
        supervisor.stop()


def _job_options(
    job_type: str,
    payload: str,
    priority: int | None,
    max_attempts: int | None,
    run_at: str | None,
    key: str | None,
) -> dict[str, Any]:
    try:
        body: dict[str, Any] = {"type": job_type, "payload": json.loads(payload)}
    except json.JSONDecodeError as exc:
        raise _fail(
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


@app.command()
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
    client = Client()
    try:
        accepted = client.submit(
            _job_options(job_type, payload, priority, max_attempts, run_at, key)
        )
    except ApiError as exc:
        raise _fail(str(exc)) from None
    console.print(accepted["id"])


@app.command()
def status(job_id: str) -> None:
    """Prints a job's current status."""
    try:
        job = Client().status(job_id)
    except ApiError as exc:
        raise _fail(str(exc)) from None
    table = Table(show_header=False)
    for name in (
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
    ):
        value = job.get(name)
        table.add_row(name, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


def describe(event: dict[str, Any]) -> str:
    """One short line of what an event says."""
    data = event["data"]
    parts = []
    if "job_type" in data:
        parts.append(f"{data['job_type']} on {data['queue']}, priority {data['priority']}")
    if "attempt" in data:
        parts.append(f"attempt {data['attempt']}")
    if data.get("error_type"):
        parts.append(f"{data['error_type']}: {data.get('error_message', '')}")
    if data.get("retry_at"):
        parts.append(f"retry at {str(data['retry_at'])[11:23]}")
    if "result" in data:
        parts.append(f"result {json.dumps(data['result'])}")
    if event["reason"]:
        parts.append(f"reason: {event['reason']}")
    return "; ".join(parts)


def history_table(events: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("v", "time", "event", "actor", "details"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            str(e["version"]), e["timestamp"][11:23], e["event_type"], e["actor"], describe(e)[:160]
        )
    return table


@app.command()
def events(job_id: str) -> None:
    """Prints a job's whole history from the event log, and its dead letters if any."""
    client = Client()
    try:
        history = client.events(job_id)
        letters = client.dead_letters(job_id)
    except ApiError as exc:
        raise _fail(str(exc)) from None
    console.print(history_table(history, f"history of {job_id}"))
    if letters:
        console.print(dead_letter_table(letters, f"dead letters naming {job_id}"))


def dead_letter_table(letters: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("at", "queue", "reason", "job_id", "message_id", "error"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter["at"][:23],
            letter["queue"],
            letter["reason"],
            str(letter["job_id"] or "-"),
            str(letter["message_id"] or "-"),
            letter["error"][:160],
        )
    return table


@app.command(name="list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="PENDING, RUNNING, COMPLETED ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """Lists the newest jobs."""
    try:
        page = Client().list(status, limit)
    except ApiError as exc:
        raise _fail(str(exc)) from None
    table = Table()
    for column in ("id", "type", "status", "attempt", "updated_at"):
        table.add_column(column)
    for job in page["jobs"]:
        table.add_row(
            job["id"], job["type"], job["status"], str(job["attempt"]), job["updated_at"] or ""
        )
    console.print(table)


@app.command()
def cancel(job_id: str, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Cancels a job (a running one stops when its worker acknowledges)."""
    try:
        job = Client().cancel(job_id, reason)
    except ApiError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{job_id}: {job['status']}{' (cancel requested)' if job['cancel_requested'] else ''}"
    )


@app.command()
def requeue(
    job_id: str,
    reason: Annotated[str, typer.Option(help="why it runs again (recorded in its history)")],
    attempts: Annotated[int, typer.Option(min=1, max=100, help="attempts to add")] = 1,
) -> None:
    """Gives a FAILED job more attempts; recorded with your API key as the actor
    (JOBTRAIL_API_KEY, else .jobtrail/api-key) and the reason."""
    try:
        job = Client().requeue(job_id, reason, attempts)
    except ApiError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{job_id}: {job['status']} (attempt {job['attempt']} of {job['max_attempts']} made)"
    )


app.command(name="audit")(audit.audit)
app.command(name="state")(audit.state)
app.command()(integrity_cli.verify)
app.command()(integrity_cli.checkpoint)
app.command()(integrity_cli.archive)
app.add_typer(integrity_cli.db_app, name="db")
app.add_typer(keys_cli.keys_app, name="keys")

dlq_app = typer.Typer(help="Dead letters: list, and replay the valid ones (idempotent).")
app.add_typer(dlq_app, name="dlq")


def _bus() -> tuple[str, Any]:
    from contracts.names import Topology
    from shared.settings import BusSettings

    bus = BusSettings()
    return bus.amqp_url, Topology(bus.topology_prefix)


@dlq_app.command(name="list")
def dlq_list(limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50) -> None:
    """Shows dead letters (they stay in the queue): origin, reason, job, and what is wrong."""
    import asyncio

    from services.cli.dlq import list_dead_letters

    url, topology = _bus()
    letters = asyncio.run(list_dead_letters(url, topology, limit))
    table = Table(title=f"{len(letters)} dead letter(s) in {topology.dead_letter_queue}")
    for column in ("message_id", "job_id", "from", "reason", "valid", "problem"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        row = letter.row()
        table.add_row(
            *(str(row[c]) for c in ("message_id", "job_id", "from", "reason", "valid", "problem"))
        )
    console.print(table)


@dlq_app.command(name="recorded")
def dlq_recorded(
    job: Annotated[str | None, typer.Option(help="only dead letters naming this job")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Shows the dead letters consumers recorded in PostgreSQL (newest first), via the API."""
    try:
        letters = Client().dead_letters(job, limit)
    except ApiError as exc:
        raise _fail(str(exc)) from None
    console.print(dead_letter_table(letters, f"{len(letters)} recorded dead letter(s)"))


@dlq_app.command(name="quarantined")
def dlq_quarantined(
    job: Annotated[str | None, typer.Option(help="only events of this job")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Shows the events of the log the relay or the projection quarantined (newest first)."""
    try:
        rows = Client().quarantined(job, limit)
    except ApiError as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"{len(rows)} quarantined event(s)")
    for column in ("at", "stage", "notification", "job_id", "version", "event", "action", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["at"][:23],
            row["stage"],
            str(row["notification_id"]),
            str(row["job_id"] or "-"),
            str(row["version"] or "-"),
            row["event_type"],
            row["action"],
            row["error"][:160],
        )
    console.print(table)


@dlq_app.command(name="replay")
def dlq_replay(
    message_id: Annotated[str | None, typer.Option(help="only this message")] = None,
) -> None:
    """Republishes valid dead letters to where they were going; invalid ones stay."""
    import asyncio

    from services.cli.dlq import replay

    url, topology = _bus()
    replayed, left = asyncio.run(replay(url, topology, message_id))
    console.print(f"replayed {replayed}; left in the dead-letter queue: {left}")


def _when(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise _fail(f"{name} needs an ISO time with a zone, e.g. 2030-01-01T09:00:00+00:00", 2)
    return at


@app.command(name="replay")
def replay_log(
    job: Annotated[str | None, typer.Option(help="refold only this job (its id)")] = None,
    since: Annotated[
        str | None, typer.Option(help="refold the jobs with an event at or after this ISO time")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="refold the jobs with an event before this ISO time")
    ] = None,
    batch: Annotated[int, typer.Option(min=100, max=100_000, help="events read per step")] = 5000,
) -> None:
    """Rebuilds the Redis projection from the log into a new key space and switches readers to it;
    or refolds one job (--job) or the jobs with events in a time range (--since/--until)."""
    import asyncio
    import uuid

    from services.cli import replay

    if job is not None and (since or until):
        raise _fail("use either --job or --since/--until, not both", 2)
    job_id = None
    if job is not None:
        try:
            job_id = uuid.UUID(job)
        except ValueError:
            raise _fail(f"--job {job!r} is not a job id (a UUID)", 2) from None
    start, end = _when("--since", since), _when("--until", until)
    if start and end and start >= end:
        raise _fail("--since must be before --until", 2)
    problems = check_infrastructure(("PostgreSQL", "Redis"))
    if problems:
        raise _fail("\n".join(problems), 2)
    try:
        if job_id is not None:
            refolded = asyncio.run(replay.refold_job(job_id))
            if not refolded:
                raise _fail(f"job {job_id} has no events in the log")
            console.print(f"refolded {refolded[0]}")
        elif start or end:
            count = asyncio.run(replay.refold_range(console, start, end))
            console.print(f"refolded {count} job(s) with events in the range")
        else:
            done = asyncio.run(replay.rebuild(console, batch))
            console.print(
                f"replayed {done.events} events in {done.seconds:.1f} s "
                f"({done.rate:.0f} events/s); readers moved from {done.old.root!r} to "
                f"{done.new.root!r}; unlinked {done.dropped} old keys"
            )
    except typer.Exit:
        raise
    except Exception as exc:  # a database that does not exist, a replay that lost a race ...
        raise _fail(f"replay failed: {type(exc).__name__}: {exc}") from None


CSV = "city,temp\nOslo,3.5\nRome,17\nCairo,29.25\nLima,19\n"


def demo_jobs(n: int) -> list[dict[str, Any]]:
    kinds = [
        {"type": "cpu.hash", "payload": {"text": "jobtrail demo", "rounds": 200}},
        {"type": "data.stats", "payload": {"csv": CSV, "column": "temp"}},
        {"type": "io.sleep", "payload": {"seconds": 0.5, "steps": 5}},
        {"type": "test.flaky", "payload": {"fail_times": 1}},
    ]
    jobs = [kinds[i % len(kinds)] | {"priority": i % 10} for i in range(n)]
    jobs[-1] = {"type": "test.flaky", "payload": {"fail_times": 99}, "max_attempts": 3}
    return jobs


@app.command()
def demo(
    jobs: Annotated[int, typer.Option(min=4, max=10_000, help="how many example jobs")] = 200,
    workers: Annotated[int, typer.Option(min=1, max=16)] = 2,
    keep: Annotated[bool, typer.Option(help="leave the services running afterwards")] = False,
) -> None:
    """Starts the system, submits example jobs, shows their outcome and one job's history."""
    problems = check_infrastructure()
    if problems:
        raise _fail("\n".join(problems), 2)
    env = _service_environment()  # the database, its schema and the service role
    local_key()
    log_dir = Path(".jobtrail/logs")
    supervisor = Supervisor(workers=workers, log_dir=log_dir, env=env)
    supervisor.start()
    watcher = threading.Thread(target=supervisor.run_until_stopped, daemon=True)
    watcher.start()
    client = Client()
    try:
        console.print(
            f"started projector, scheduler, {workers} worker(s), submitter (logs in {log_dir}/)"
        )
        deadline = time.monotonic() + 60
        while not client.ready():
            if time.monotonic() > deadline:
                raise _fail(f"the API did not become ready within 60 s; see {log_dir}/")
            time.sleep(0.3)
        _run_demo(client, demo_jobs(jobs))
    finally:
        if keep:
            console.print(f"services keep running (API {client.http.base_url}); stop with Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                watcher.join()
        supervisor.stop()


def _run_demo(client: Client, jobs: list[dict[str, Any]]) -> None:
    started = time.monotonic()
    ids: list[str] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("submitting", total=len(jobs))
        for start in range(0, len(jobs), 50):
            for item in client.submit_batch(jobs[start : start + 50]):
                if item["errors"]:
                    raise _fail(f"job {start + item['index']} refused: {item['errors']}")
                ids.append(item["id"])
            progress.advance(task, min(50, len(jobs) - start))
        done: dict[str, dict[str, Any]] = {}
        task = progress.add_task("running", total=len(ids))
        with ThreadPoolExecutor(8) as pool:
            while len(done) < len(ids):
                waiting = [i for i in ids if i not in done]
                for job in pool.map(client.status, waiting):
                    if job["status"] in TERMINAL:
                        done[job["id"]] = job
                progress.update(task, completed=len(done))
                if len(done) < len(ids):
                    time.sleep(0.3)
    elapsed = time.monotonic() - started
    table = Table(
        title=f"{len(ids)} jobs in {elapsed:.1f} s ({len(ids) / elapsed:.0f} jobs/s end to end)"
    )
    counts = Counter((job["type"], job["status"]) for job in done.values())
    for column in ("type", "status", "jobs"):
        table.add_column(column)
    for (job_type, job_status), n in sorted(counts.items()):
        table.add_row(job_type, job_status, str(n))
    console.print(table)
    failed = next((j for j in done.values() if j["status"] == "FAILED"), None)
    shown = failed or next(iter(done.values()))
    console.print(
        history_table(client.events(shown["id"]), f"history of {shown['id']} ({shown['type']})")
    )
    _show_verified()
    console.print(
        f"see any job: jobtrail events <id>   (at {datetime.now().isoformat(timespec='seconds')})"
    )


def _show_verified() -> None:
    """Checkpoints the log the demo wrote and verifies every hash chain against it."""
    from shared.eventstore.checkpoints import write_checkpoint
    from shared.eventstore.verify import verify_log

    with integrity_cli.connect() as conn:
        write_checkpoint(conn)
    report = verify_log(integrity_cli.log_conninfo())
    verdict = (
        "[green]verified[/green]" if report.ok else f"[red]{len(report.problems)} problems[/red]"
    )
    console.print(
        f"tamper evidence: {report.events} events of {report.jobs} jobs, every SHA-256 chain "
        f"and {report.checkpoints} checkpoint(s) {verdict} (jobtrail verify)"
    )


def main() -> None:
    from shared.redact import install_log_redaction

    install_log_redaction()  # a driver's warning (psycopg_pool's, say) never shows a password
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
