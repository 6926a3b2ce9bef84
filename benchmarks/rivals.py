"""The rival harness (Celery, Dramatiq) for benchmarks.compare; it is not part of the project.

It lives in ``../shared/anchors`` next to the main checkout (or where ``--anchors`` or
JOBTRAIL_BENCH_ANCHORS point) and runs with its own interpreter (``--rival-python`` or
JOBTRAIL_BENCH_RIVAL_PYTHON, default /tmp/benchvenv/bin/python). Each run copies it to a temporary
directory, runs a script there, and reads the JSON lines it prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PYTHON = "/tmp/benchvenv/bin/python"  # noqa: S108 (the harness's documented place)
SETUP = """\
The harness is the folder shared/anchors next to the main checkout (../shared/anchors), not part
of the project. Its interpreter is set up once, outside the project's venv (its README):
    python3 -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install "celery==5.7.*" "dramatiq[rabbitmq]==2.2.*" "redis>=5" pika
Point elsewhere with --anchors DIR (or JOBTRAIL_BENCH_ANCHORS) and --rival-python PATH (or
JOBTRAIL_BENCH_RIVAL_PYTHON); --rivals none prints jobtrail's figures alone."""
SCRIPTS = (
    "benchlib.py",
    "celery_app.py",
    "celery_bench.py",
    "dramatiq_app.py",
    "dramatiq_bench.py",
)
REDIS_DBS = {"celery": 13, "dramatiq": 14}
QUEUES = ("bench_celery", "bench_dramatiq", "bench_dramatiq.DQ", "bench_dramatiq.XQ")


class SetupError(RuntimeError):
    pass


def _candidates(given: str | None) -> list[Path]:
    if given:
        return [Path(given)]
    found = [ROOT.parent / "shared" / "anchors"]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        found.append(Path(common).parent.parent / "shared" / "anchors")  # main checkout's ../
    return found


def find_anchors(given: str | None) -> Path:
    """The harness directory, or SetupError saying where it was looked for and how to set up."""
    tried = _candidates(given or os.environ.get("JOBTRAIL_BENCH_ANCHORS"))
    for path in tried:
        if all((path / name).is_file() for name in SCRIPTS):
            return path
    where = ", ".join(str(p) for p in tried)
    raise SetupError(f"the rival harness ({', '.join(SCRIPTS)}) is not in {where}.\n{SETUP}")


def check_python(python: str) -> dict[str, str]:
    """Versions of the rivals in the harness's interpreter, or SetupError."""
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
        "('celery', 'kombu', 'dramatiq', 'pika', 'redis')}))"
    )
    try:
        out = subprocess.run(  # noqa: S603
            [python, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SetupError(f"the rivals' interpreter {python} does not work: {exc}\n{SETUP}") from exc
    return dict(json.loads(out.stdout))


def check_redis_dbs(wanted: set[str]) -> None:
    """The harness refuses to run when its Redis databases hold keys: say so before starting."""
    for rival, db in REDIS_DBS.items():
        if rival not in wanted:
            continue
        client: Any = redis.Redis(host="127.0.0.1", port=6379, db=db)
        try:
            size = client.dbsize()
        finally:
            client.close()
        if size:
            raise SetupError(
                f"Redis db {db} (the {rival} harness's results) holds {size} keys; the harness "
                f"refuses to run then. Check what they are (redis-cli -n {db} --scan | head): "
                f"empty it (redis-cli -n {db} flushdb) only if they are a previous run's "
                f"leftovers, else leave {rival} out (--rivals "
                f"{','.join(sorted(set(REDIS_DBS) - {rival})) or 'none'})."
            )


class Rivals:
    """The harness copied to a temporary directory; ``run`` executes one of its scripts."""

    def __init__(self, anchors: Path, python: str, wanted: set[str]) -> None:
        unknown = wanted - set(REDIS_DBS)
        if unknown:
            raise SetupError(f"unknown rival(s) {', '.join(sorted(unknown))}: celery, dramatiq")
        self.wanted = wanted
        self.python = python
        self.versions = check_python(python)
        check_redis_dbs(wanted)
        self.tmp = Path(tempfile.mkdtemp(prefix="jobtrail-rivals-"))
        self.dir = self.tmp / "anchors"
        shutil.copytree(anchors, self.dir, copy_function=shutil.copyfile)
        self.dir.chmod(0o755)
        self.log = self.tmp / "rivals.log"

    def __enter__(self) -> Rivals:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def run(self, script: str, *args: str, timeout: float = 900.0) -> list[dict[str, Any]]:
        """Runs ``script`` with ``args``; its JSON result lines (its log goes to rivals.log).
        On Ctrl-C the script gets SIGINT too, and is waited for while it stops its workers."""
        env = os.environ | {
            "BENCH_RESULTS_DIR": str(self.tmp / "results"),
            "BENCH_VENV_BIN": str(Path(self.python).parent),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        with self.log.open("a") as log:
            log.write(f"\n$ {script} {' '.join(args)}\n")
            log.flush()
            offset = log.tell()
            process = subprocess.Popen(  # noqa: S603
                [self.python, script, *args],
                cwd=self.dir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            try:
                stdout, _ = process.communicate(timeout=timeout)
            except BaseException:
                _interrupt(process)
                raise
            finally:
                self._stop_leftovers(offset)
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        if process.returncode != 0:
            raise RuntimeError(f"{script} exited with {process.returncode}:\n{self.tail()}")
        return lines

    def _stop_leftovers(self, offset: int) -> None:
        """Stops the worker sessions the script started and did not stop (it logs both, with
        each worker's pid, which is also its session's process group)."""
        with self.log.open() as log:
            log.seek(offset)
            text = log.read()
        started = {int(pid) for pid in re.findall(r"started \S+ pid=(\d+)", text)}
        stopped = {int(pid) for pid in re.findall(r"stopped pid=(\d+)", text)}
        for pid in started - stopped:
            cmdline = Path(f"/proc/{pid}/cmdline")
            with contextlib.suppress(OSError):
                if str(Path(self.python).parent) in cmdline.read_bytes().decode(errors="replace"):
                    print(f"stopping the rival worker session {pid} the harness left running")
                    os.killpg(pid, signal.SIGTERM)
                    time.sleep(5)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Deletes the bench_* queues (the scripts do too, unless they were killed) and the
        copy."""
        delete_queues()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _interrupt(process: subprocess.Popen[str]) -> None:
    """After Ctrl-C (or a time-out) here: give the script time to stop its workers (a terminal's
    Ctrl-C reached it too; otherwise send it one SIGINT), then terminate it."""
    for step in ("wait", "interrupt", "terminate"):
        if process.poll() is not None:
            return
        if step == "interrupt":
            process.send_signal(signal.SIGINT)
        elif step == "terminate":
            process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(45)


def delete_queues() -> None:
    import asyncio

    import aio_pika

    async def delete() -> None:
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=10)
        async with connection:
            for name in QUEUES:
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete("bench_celery")

    try:
        asyncio.run(delete())
    except Exception as exc:
        print(f"clean-up: could not delete the rivals' queues {QUEUES}: {exc!r}", file=sys.stderr)
