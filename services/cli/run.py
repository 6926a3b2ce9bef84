"""``jobtrail up`` and ``jobtrail demo``: the whole system on this machine, for development.

Both check the local servers (shared/servers.py), set up the schema and the PostgreSQL role the
services run as (roles.py), make sure the CLI has an API key of its own (``local_key``), and run
the four services as supervised processes (supervisor.py). They load the example job types
(examples/jobs.py) unless JOBTRAIL_JOB_MODULES says otherwise: a production deployment loads
only the modules it names.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli import database
from services.cli.client import LOCAL_KEY_FILE, Client
from services.cli.console import console, fail
from services.cli.render import history_table
from services.cli.roles import RoleError, role_name, service_environment
from services.cli.supervisor import Supervisor
from shared.domain.status import TERMINAL
from shared.servers import check_infrastructure

EXAMPLE_JOB_MODULES = "examples.jobs"
"""What ``up`` and ``demo`` load when JOBTRAIL_JOB_MODULES is not set."""

LOG_DIR = Path(".jobtrail/logs")


def local_key() -> str:
    """The API key of this machine's CLI: JOBTRAIL_API_KEY when set; else the one in
    .jobtrail/api-key while it is live; else a new admin key of the default tenant, written
    there (mode 0600) for the CLI's later commands. The key itself is never printed."""
    from shared import keys

    given = os.environ.get("JOBTRAIL_API_KEY", "").strip()
    if given:
        return given
    with database.connect() as conn:
        keys.create_table(conn)
        ring = keys.KeyRing()
        ring.refresh(conn, full=True)
        if LOCAL_KEY_FILE.is_file():
            known = LOCAL_KEY_FILE.read_text().strip()
            if ring.check(known) is not None:
                return known
        info, key = keys.create_key(conn, "default", ["admin"], name="local (jobtrail up/demo)")
    LOCAL_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    # owner-only from its first byte, also when the file already existed with other rights
    fd = os.open(LOCAL_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(key + "\n")
    console.print(f"created API key {info.id} (tenant default, admin) in {LOCAL_KEY_FILE}")
    return key


def development_environment() -> dict[str, str]:
    """The services' environment: every local server answers, they run as the service role, not
    as the owner (roles.py), and they know the example job types unless told otherwise."""
    problems = check_infrastructure()
    if problems:
        raise fail("\n".join(problems), 2)
    try:
        env = service_environment()
    except RoleError as exc:
        raise fail(str(exc), 2) from None
    console.print(f"services run as PostgreSQL role {role_name(env)} (JOBTRAIL_SERVICE_ROLE)")
    if "JOBTRAIL_JOB_MODULES" not in env:
        env["JOBTRAIL_JOB_MODULES"] = EXAMPLE_JOB_MODULES
        console.print(f"job types from {EXAMPLE_JOB_MODULES} (JOBTRAIL_JOB_MODULES)")
    return env


def up(
    workers: Annotated[int, typer.Option(min=1, max=64, help="worker processes")] = 1,
) -> None:
    """Runs projector, scheduler, worker(s) and submitter as processes; restarts one that dies."""
    env = development_environment()
    local_key()
    supervisor = Supervisor(workers=workers, env=env)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.request_stop())
    supervisor.start()
    console.print(f"jobtrail is up: API on {Client().http.base_url} (Ctrl-C stops it)")
    try:
        supervisor.run_until_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping...")
        supervisor.stop()


CSV = "city,temp\nOslo,3.5\nRome,17\nCairo,29.25\nLima,19\n"


def demo_jobs(n: int) -> list[dict[str, Any]]:
    """``n`` jobs of the example types; the last one fails for good (its history is shown)."""
    kinds = [
        {"type": "cpu.hash", "payload": {"text": "jobtrail demo", "rounds": 200}},
        {"type": "data.stats", "payload": {"csv": CSV, "column": "temp"}},
        {"type": "io.sleep", "payload": {"seconds": 0.5, "steps": 5}},
        {"type": "test.flaky", "payload": {"fail_times": 1}},
    ]
    jobs = [kinds[i % len(kinds)] | {"priority": i % 10} for i in range(n)]
    jobs[-1] = {"type": "test.flaky", "payload": {"fail_times": 99}, "max_attempts": 3}
    return jobs


def demo(
    jobs: Annotated[int, typer.Option(min=4, max=10_000, help="how many example jobs")] = 200,
    workers: Annotated[int, typer.Option(min=1, max=16)] = 2,
    keep: Annotated[bool, typer.Option(help="leave the services running afterwards")] = False,
) -> None:
    """Starts the system, submits example jobs, shows their outcome and one job's history."""
    env = development_environment()
    local_key()
    supervisor = Supervisor(workers=workers, log_dir=LOG_DIR, env=env)
    supervisor.start()
    watcher = threading.Thread(target=supervisor.run_until_stopped, daemon=True)
    watcher.start()
    client = Client()
    try:
        console.print(
            f"started projector, scheduler, {workers} worker(s), submitter (logs in {LOG_DIR}/)"
        )
        deadline = time.monotonic() + 60
        while not client.ready():
            if time.monotonic() > deadline:
                raise fail(f"the API did not become ready within 60 s; see {LOG_DIR}/")
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
                    raise fail(f"job {start + item['index']} refused: {item['errors']}")
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

    with database.connect() as conn:
        write_checkpoint(conn)
    report = verify_log(database.log_conninfo())
    verdict = (
        "[green]verified[/green]" if report.ok else f"[red]{len(report.problems)} problems[/red]"
    )
    console.print(
        f"tamper evidence: {report.events} events of {report.jobs} jobs, every SHA-256 chain "
        f"and {report.checkpoints} checkpoint(s) {verdict} (jobtrail verify)"
    )


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(demo)
