"""Listing by status and type is bounded by the smaller index, not one Redis read per job of
the status (``GET /v1/jobs?status=COMPLETED&type=<rare>&limit=500``)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.domain import Job
from shared.redis_view import RedisView
from shared.settings import RedisSettings
from tests.jobs import CAUSE, NOW

COMMON, RARE = "test.common", "test.rare"


def completed(job_type: str, created: datetime) -> Job:
    """A COMPLETED job of ``job_type`` created at ``created``."""
    job = Job.submit(CAUSE, job_type=job_type, payload={})
    job.schedule(CAUSE, NOW)
    job.start(CAUSE, worker_id="w1", attempt=1, lease_s=30, now=NOW)
    job.complete(CAUSE, worker_id="w1", attempt=1, result={"ok": True})
    job.collect_events()
    object.__setattr__(job, "_created_on", created)
    return job


@pytest.fixture
async def view(redis_url: str) -> AsyncIterator[RedisView]:
    prefix = f"jt-list-{uuid.uuid4().hex[:6]}"
    view = RedisView(RedisSettings(redis_url=redis_url, redis_prefix=prefix, final_ttl_s=0))
    try:
        yield view
    finally:
        keys = [key async for key in view.redis.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await view.redis.unlink(*keys[start : start + 500])
        await view.aclose()


class Calls:
    """Every command sent to Redis, and how many round trips carried them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: Counter[str] = Counter()
        self.round_trips = 0
        direct, queued, flush = Redis.execute_command, Pipeline.execute_command, Pipeline.execute

        async def on_direct(client: Any, *args: Any, **kwargs: Any) -> Any:
            self.commands[str(args[0]).upper()] += 1
            self.round_trips += 1
            return await direct(client, *args, **kwargs)

        def on_queued(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            self.commands[str(args[0]).upper()] += 1
            return queued(pipe, *args, **kwargs)

        async def on_flush(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            self.round_trips += 1
            return await flush(pipe, *args, **kwargs)

        monkeypatch.setattr(Redis, "execute_command", on_direct)
        monkeypatch.setattr(Pipeline, "execute_command", on_queued)
        monkeypatch.setattr(Pipeline, "execute", on_flush)


async def test_a_rare_type_among_many_completed_jobs_reads_only_its_own_jobs(
    view: RedisView, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 2,000 completed jobs of a common type and 3 of a rare one, interleaved in time
    start = datetime.now(UTC) - timedelta(hours=1)
    jobs = [completed(COMMON, start + timedelta(seconds=i)) for i in range(2000)]
    rare = [
        completed(RARE, start + timedelta(seconds=i, milliseconds=500)) for i in (10, 700, 1500)
    ]
    await view.put_jobs(jobs + rare)

    # When the completed jobs of the rare type are listed, 500 at most
    calls = Calls(monkeypatch)
    page = await view.page(status="COMPLETED", job_type=RARE, limit=500)

    # Then exactly those come back, newest first, read with a few round trips and one hash
    # read per matching job (not one per completed job)
    assert [v["id"] for v in page] == [str(j.id) for j in reversed(rare)]
    assert calls.commands["HGETALL"] == len(rare), calls.commands
    assert calls.round_trips <= 5, (calls.round_trips, calls.commands)
    monkeypatch.undo()

    # And the page cursor and the other filters answer as before
    older = await view.page(
        status="COMPLETED", job_type=RARE, limit=1, before=float(page[0]["created_ms"])
    )
    assert [v["id"] for v in older] == [str(rare[1].id)]
    newest = await view.page(status="COMPLETED", job_type=COMMON, limit=3)
    assert [v["id"] for v in newest] == [str(j.id) for j in jobs[-1:-4:-1]]
    assert len(await view.page(status="COMPLETED", limit=2003)) == 2003
    assert [v["id"] for v in await view.page(job_type=RARE)] == [str(j.id) for j in reversed(rare)]
    assert await view.page(status="FAILED", job_type=RARE) == []
