"""`jobtrail up` restarts a service that dies, and stops every service it started."""

from __future__ import annotations

import time
from pathlib import Path

from services.cli.supervisor import Child, Supervisor


def test_a_dead_service_is_restarted_after_a_backoff() -> None:
    # Given a supervisor whose only child exits at once
    supervisor = Supervisor(workers=1)
    supervisor.children = [Child("flaky", "tests.exiting_child")]
    supervisor.start()
    child = supervisor.children[0]
    assert child.process is not None
    child.process.wait(timeout=30)
    first = child.process.pid

    # When it watches for a few seconds
    restarted: list[str] = []
    noticed = time.monotonic()
    deadline = noticed + 10
    while not restarted and time.monotonic() < deadline:
        restarted = supervisor.watch_once()
        time.sleep(0.1)

    # Then the child was started again, as a new process, after the first backoff (1 s)
    assert restarted == ["flaky"]
    assert time.monotonic() - noticed >= 1.0
    assert child.restarts == 1 and child.process.pid != first
    supervisor.stop(timeout=5)
    assert child.process.poll() is not None


def test_up_runs_each_service_and_the_requested_workers() -> None:
    supervisor = Supervisor(workers=3)
    names = [c.name for c in supervisor.children]
    assert names == ["projector", "scheduler", "worker-1", "worker-2", "worker-3", "submitter"]
    assert {c.module for c in supervisor.children} == {
        "services.projector",
        "services.scheduler",
        "services.worker",
        "services.submitter",
    }


def test_a_stop_request_ends_the_watch_loop_from_another_thread() -> None:
    # Given a supervisor watching (no children: this is about the loop)
    import threading

    supervisor = Supervisor(workers=1)
    supervisor.children = []
    watcher = threading.Thread(target=supervisor.run_until_stopped)
    watcher.start()

    # When a signal handler (or another thread) asks it to stop
    supervisor.request_stop()

    # Then the loop returns
    watcher.join(timeout=5)
    assert not watcher.is_alive()


def test_each_process_gets_a_free_health_port_unless_one_is_set(tmp_path: Path) -> None:
    # Given the processes of one host (two workers among them)
    supervisor = Supervisor(workers=2, env={}, log_dir=tmp_path)
    first, second = (c for c in supervisor.children if c.name.startswith("worker"))
    # Then each picks a free port and writes it beside its log
    assert supervisor.environment(first)["JOBTRAIL_HEALTH_PORT"] == "0"
    assert supervisor.environment(second)["JOBTRAIL_HEALTH_PORT_FILE"] == str(
        tmp_path / "worker-2.port"
    )
    # Unless the environment names a port: then that port plus the process's index
    supervisor.env = {"JOBTRAIL_HEALTH_PORT": "9100"}
    index = supervisor.children.index(first)
    assert supervisor.environment(first)["JOBTRAIL_HEALTH_PORT"] == str(9100 + index)
    assert "JOBTRAIL_HEALTH_PORT_FILE" not in supervisor.environment(first)


def test_each_process_gets_a_health_port_of_its_own() -> None:
    # Given `jobtrail up` with two workers, once without a health port and once naming one
    free = Supervisor(workers=2, env={})
    named = Supervisor(workers=2, env={"JOBTRAIL_HEALTH_PORT": "9100"})
    # Then no two processes are told the same port: free ones, or the named one plus an index
    assert {free.environment(c)["JOBTRAIL_HEALTH_PORT"] for c in free.children} == {"0"}
    ports = [named.environment(c)["JOBTRAIL_HEALTH_PORT"] for c in named.children]
    assert len(set(ports)) == len(named.children) and ports[0] == "9100", ports
    # And a port that is not a number is left for the service to refuse, naming the setting
    bad = Supervisor(workers=1, env={"JOBTRAIL_HEALTH_PORT": "x"})
    assert bad.environment(bad.children[0])["JOBTRAIL_HEALTH_PORT"] == "x"
