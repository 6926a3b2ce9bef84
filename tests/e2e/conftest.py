from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.eventstore import JobStore
from shared.settings import StoreSettings
from tests.processes import System, free_port, system_env
from tests.services import fresh_database


@pytest.fixture(scope="package")
def e2e_postgres_url(postgres_server: str) -> Iterator[str]:
    """The services get a database of their own, so no other test's jobs reach them."""
    with fresh_database(postgres_server, "e2e") as url:
        yield url


@pytest.fixture(scope="package")
def system(
    e2e_postgres_url: str,
    amqp_url: str,
    redis_url: str,
    topology_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    rabbit_cleanup: None,
) -> Iterator[System]:
    """submitter, scheduler, projector and two workers, each its own OS process."""
    log_dir: Path = tmp_path_factory.mktemp("services")
    port = free_port()
    env = system_env(e2e_postgres_url, amqp_url, redis_url, topology_prefix, port)
    running = System(env, log_dir, port)
    running.start(("projector", "scheduler", "worker-a", "worker-b", "submitter"))
    try:
        running.wait_ready()
        yield running
        crashed = [
            s.name for s in running.services.values() if s.process and s.process.poll() is not None
        ]
        assert not crashed, f"services died during the tests: {crashed}\n{running.logs()}"
    finally:
        running.stop()
        print(running.logs())


@pytest.fixture(scope="package")
def log_store(e2e_postgres_url: str) -> Iterator[JobStore]:
    """A direct reader of the services' log, to check what they wrote."""
    store = JobStore(StoreSettings(postgres_url=e2e_postgres_url))
    yield store
    store.close()
