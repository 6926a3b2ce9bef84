"""A service's metrics port serves the event store's counters."""

from __future__ import annotations

import uuid

import httpx

from shared import metrics
from shared.domain import Cause, Job
from shared.eventstore import JobStore
from tests.processes import free_port


def sample(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


def test_the_metrics_port_serves_the_store_counters(store: JobStore) -> None:
    # Given a process that watches its store and serves metrics on a port
    port = free_port()
    metrics.watch_store(store)
    metrics.serve(metrics.MetricsSettings(port=port))
    url = f"http://127.0.0.1:{port}/metrics"
    before = sample(httpx.get(url, timeout=5).text, "jobtrail_store_commands_total")

    # When the store decides a command
    job_id = uuid.uuid4()
    cause = Cause("test", correlation_id="metrics")
    store.execute(job_id, lambda _: Job.submit(cause, job_type="t", payload={}, job_id=job_id))

    # Then the scrape shows it
    text = httpx.get(url, timeout=5).text
    assert sample(text, "jobtrail_store_commands_total") == before + 1
    assert sample(text, "jobtrail_store_events_total") >= 1
