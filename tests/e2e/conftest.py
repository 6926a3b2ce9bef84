from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.eventstore import JobStore
from shared.settings import StoreSettings
from tests.processes import System, free_port, system_env


@pytest.fixture(scope="session")
def system(
    postgres_url: str,
    amqp_url: str,
    redis_url: str,
    topology_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    rabbit_cleanup: None,
) -> Iterator[System]:
    """submitter, scheduler, projector and two workers, each its own OS process."""
    log_dir: Path = tmp_path_factory.mktemp("services")
    port = free_port()
    env = system_env(postgres_url, amqp_url, redis_url, topology_prefix, port)
    running = System(env, log_dir, port)
    running.start(("projector", "scheduler", "worker-a", "worker-b", "submitter"))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        print(running.logs())


@pytest.fixture(scope="session")
def log_store(postgres_url: str) -> Iterator[JobStore]:
    """A direct reader of the log, to check what the services wrote."""
    store = JobStore(StoreSettings(postgres_url=postgres_url))
    yield store
    store.close()
