"""GET /v1/jobs/{id}/wait, the long poll: the real app over real PostgreSQL and Redis (no broker,
no projector: the job is read from the log, as when Redis has no entry)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from services.submitter import handlers
from services.submitter.admission import Waiters
from services.submitter.deps import Deps
from shared.settings import StoreSettings
from tests.api import assert_problem, served
from tests.processes import free_port

JOB = {"type": "cpu.hash", "payload": {"text": "waited for"}}


@pytest.fixture
async def api(
    store_settings: StoreSettings, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Deps]]:
    async with served(store_settings, redis_url) as api:
        yield api.client, api.deps


async def submitted(client: httpx.AsyncClient) -> str:
    answer = await client.post("/v1/jobs", json=JOB)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


async def test_a_wait_answers_as_soon_as_the_job_ends(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a job no worker runs, and a wait of 30 s on it
    client, deps = api
    job_id = await submitted(client)
    waiting = asyncio.create_task(client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 30}))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # held while the job has not ended
    # When the job is cancelled
    cancelled = await client.post(f"/v1/jobs/{job_id}/cancel", json={"reason": "enough"})
    assert cancelled.status_code == 202, cancelled.text
    # Then the wait answers with the ended job long before its timeout
    answer = await asyncio.wait_for(waiting, 5)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["id"], answer.json()["status"]) == (job_id, "CANCELLED")
    assert deps.waiters.waiting == 0


async def test_a_wait_answers_the_job_as_it_stands_when_its_timeout_passes(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a job that does not end
    client, deps = api
    job_id = await submitted(client)
    # When a wait of 0.3 s, and one of 60 s on a server that cuts waits at 0.2 s, pass
    short = await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 0.3})
    deps.waiters.max_wait_s = 0.2
    cut = await asyncio.wait_for(client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 60}), 5)
    # Then both answer the job as GET /v1/jobs/{id} does, not ended
    plain = (await client.get(f"/v1/jobs/{job_id}")).json()
    for answer in (short, cut):
        assert answer.status_code == 200, answer.text
        assert answer.json() == plain
        assert answer.json()["status"] == "SCHEDULED"


async def test_a_waiting_request_reads_the_job_a_few_times_a_second_not_in_a_loop(
    api: tuple[httpx.AsyncClient, Deps], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job that does not end, and a count of the reads of jobs
    client, _ = api
    job_id = await submitted(client)
    reads = 0
    read_job = handlers.read_job

    async def counted(*args: Any) -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return await read_job(*args)

    monkeypatch.setattr(handlers, "read_job", counted)
    # When a request waits for 1.5 s
    answer = await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 1.5})
    # Then the job was read after pauses of 50 ms doubling to 0.5 s: about 6 times, not hundreds
    assert answer.status_code == 200, answer.text
    assert 3 <= reads <= 8, reads


@pytest.mark.parametrize("asked", ["-1", "60.5", "soon"])
async def test_a_timeout_out_of_range_is_refused_naming_it(
    api: tuple[httpx.AsyncClient, Deps], asked: str
) -> None:
    client, _ = api
    job_id = await submitted(client)
    answer = await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": asked})
    assert [e["field"] for e in assert_problem(answer, 422)["errors"]] == ["query.timeout"]


async def test_an_unknown_job_is_a_404_at_once(api: tuple[httpx.AsyncClient, Deps]) -> None:
    client, deps = api
    answer = await asyncio.wait_for(
        client.get(f"/v1/jobs/{uuid.uuid4()}/wait", params={"timeout": 30}), 5
    )
    assert_problem(answer, 404)
    assert deps.waiters.waiting == 0  # the refused wait gave its place back


async def test_past_the_waiters_bound_a_wait_is_refused_with_retry_after(
    api: tuple[httpx.AsyncClient, Deps],
) -> None:
    # Given a submitter that allows one wait at a time, and one waiting
    client, deps = api
    deps.waiters = Waiters(limit=1)
    job_id = await submitted(client)
    first = asyncio.create_task(client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 1}))
    await asyncio.sleep(0.3)
    # When a second one comes
    second = await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 1})
    # Then it is refused with 503 and when to come back; the first one answers as usual
    assert assert_problem(second, 503)["title"] == "Too many waits"
    assert second.headers["Retry-After"] == "1"
    assert (await first).status_code == 200
    # And once the first has answered, a wait is served again
    again = await client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 0})
    assert again.status_code == 200, again.text


async def test_a_wait_whose_client_went_away_gives_its_place_back(
    store_settings: StoreSettings, redis_url: str
) -> None:
    async with served(store_settings, redis_url) as api:
        # Given the app served over TCP by uvicorn, and a job that does not end
        job_id = await submitted(api.client)
        port = free_port()
        config = uvicorn.Config(api.app, port=port, lifespan="off", log_level="error")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            for _ in range(100):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            # When a client asks for a 30 s wait, then gives up after half a second
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=api.client.headers
            ) as remote:
                with pytest.raises(httpx.ReadTimeout):
                    await remote.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 30}, timeout=0.5)
            # Then the server stops waiting at its next read, not after 30 s
            for _ in range(40):
                if api.deps.waiters.waiting == 0:
                    break
                await asyncio.sleep(0.05)
            assert api.deps.waiters.waiting == 0
        finally:
            server.should_exit = True
            await serving
