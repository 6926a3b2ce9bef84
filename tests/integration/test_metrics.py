"""A service's health port serves the event store's counters and its group commits."""

from __future__ import annotations

import uuid

import httpx

from shared import metrics
from shared.domain import Cause, Job
from shared.eventstore import AsyncJobStore, Command, JobStore
from shared.health import Health, HealthSettings


def sample(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


def submitting(job_id: uuid.UUID) -> Command:
    cause = Cause("test", correlation_id="metrics")
    return lambda _: Job.submit(cause, job_type="t", payload={}, job_id=job_id)


async def test_the_health_port_serves_the_store_counters(store: JobStore) -> None:
    # Given a process that watches its store and serves its health port (a free one)
    health = Health("worker", HealthSettings(port=0))
    port = await health.serve()
    async with AsyncJobStore(JobStore(store.settings)) as aio:
        metrics.watch_store(aio)
        url = f"http://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient(timeout=5) as http:
            before = (await http.get(url)).text
            # When the store decides three commands in group commits
            for job_id in (uuid.uuid4(), uuid.uuid4(), uuid.uuid4()):
                await aio.execute(job_id, submitting(job_id))
            text = (await http.get(url)).text
    await health.aclose()

    # Then the scrape shows them: the counters and the group-commit histograms
    assert (
        sample(text, "jobtrail_store_commands_total")
        == sample(before, "jobtrail_store_commands_total") + 3
    )
    assert (
        sample(text, "jobtrail_group_commit_size_count")
        >= sample(before, "jobtrail_group_commit_size_count") + 3
    )
    assert sample(text, "jobtrail_group_commit_wait_seconds_count") >= 3
