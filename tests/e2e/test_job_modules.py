"""A worker with no job types (the production default) starts, warns, and stops cleanly."""

from __future__ import annotations

import signal
import time

from tests.processes import Service, System


def test_a_worker_without_job_types_starts_and_says_so(system: System) -> None:
    # Given the system's environment without JOBTRAIL_JOB_MODULES
    env = {k: v for k, v in system.env.items() if k != "JOBTRAIL_JOB_MODULES"}
    worker = Service("worker-bare", env, system.log_dir).start()
    try:
        # When it has had time to start
        deadline = time.monotonic() + 60
        while "worker worker-bare" not in worker.tail(200) and time.monotonic() < deadline:
            assert worker.process is not None and worker.process.poll() is None, worker.tail()
            time.sleep(0.2)

        # Then it runs, consuming no type's queue, and its log says it knows no job types
        log = worker.tail(200)
        assert "consumes [" in log, log
        assert "no job types" in log and "JOBTRAIL_JOB_MODULES" in log
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.stop()
    assert code == 0, worker.tail()
