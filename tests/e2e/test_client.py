"""The Python client (jobtrail.client) against the real services as processes: typed
submissions and results, batches, cancel, history, past state, typed errors carrying the
problem document, retries that keep the idempotency key, and waits that do not poll."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from examples.jobs import HashIn, HashOut, SleepIn, SleepOut, hash_text, sleep
from jobtrail import (
    AsyncClient,
    Client,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    JobCancelledError,
    NotFoundError,
    RetryPolicy,
    SubmitJob,
    UnauthorizedError,
)
from tests.api import bearer, issue_key
from tests.e2e.helpers import wait_for
from tests.processes import System

pytestmark = pytest.mark.e2e

FAST_RETRIES = RetryPolicy(attempts=4, first_delay_s=0.05, max_delay_s=0.5)


def new_key(system: System, scopes: Sequence[str] = ("admin",)) -> str:
    """A key of a tenant of its own (its jobs are the test's alone), once the submitter knows
    it (it reads new keys within a second)."""
    tenant = f"client-{uuid.uuid4().hex[:12]}"
    key = issue_key(system.env["JOBTRAIL_POSTGRES_URL"], tenant=tenant, scopes=scopes)
    url = f"{system.base_url}/v1/jobs?limit=1"
    wait_for(lambda: httpx.get(url, headers=bearer(key)).status_code != 401, 15, "a new key")
    return key


def listed(system: System, key: str) -> list[str]:
    """The ids of the key's tenant's jobs, from the projection."""
    page = httpx.get(f"{system.base_url}/v1/jobs?limit=100", headers=bearer(key)).json()
    return [job["id"] for job in page["jobs"]]


class Recording(httpx.HTTPTransport):
    """Sends every request to the server and keeps it. ``lose`` answers of requests to a path
    are read, then lost (a timeout is raised instead: the server acted, the client never knew);
    ``refuse`` sends answer 429 without reaching the server; ``no_wait`` plays a submitter
    without the wait endpoint (its 404 for an unknown path)."""

    def __init__(
        self, *, lose: dict[str, int] | None = None, refuse: int = 0, no_wait: bool = False
    ) -> None:
        super().__init__()
        self.lose, self.refuse, self.no_wait = dict(lose or {}), refuse, no_wait
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        if self.refuse:
            self.refuse -= 1
            problem = {"title": "Too many requests", "status": 429, "detail": "slow down"}
            return httpx.Response(429, json=problem, headers={"Retry-After": "0"})
        if self.no_wait and request.url.path.endswith("/wait"):
            return httpx.Response(
                404, json={"title": "Error", "status": 404, "detail": "Not Found"}
            )
        response = super().handle_request(request)
        if self.lose.get(request.url.path, 0) > 0:
            self.lose[request.url.path] -= 1
            response.read()
            response.close()
            raise httpx.ReadTimeout("the answer was lost on its way", request=request)
        return response

    def requests(self, method: str, ending: str) -> list[httpx.Request]:
        return [r for r in self.sent if r.method == method and r.url.path.endswith(ending)]


class AsyncRecording(httpx.AsyncHTTPTransport):
    """``Recording``'s lost answers, for the asyncio client."""

    def __init__(self, lose: dict[str, int]) -> None:
        super().__init__()
        self.lose = dict(lose)
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = await super().handle_async_request(request)
        if self.lose.get(request.url.path, 0) > 0:
            self.lose[request.url.path] -= 1
            await response.aread()
            await response.aclose()
            raise httpx.ReadTimeout("the answer was lost on its way", request=request)
        return response


def test_a_job_type_submits_a_typed_payload_and_gives_back_its_typed_result(
    system: System,
) -> None:
    with Client(system.base_url, api_key=system.api_key) as client:
        # When a registered job type is submitted with its payload model
        job = client.job(hash_text).submit(HashIn(text="hello"))
        # Then its result is the type's result model, computed by a worker
        result = job.result(timeout=60)
        assert isinstance(result, HashOut)
        assert result.digest == hashlib.sha256(b"hello").hexdigest()
        # And a read by id alone gives the same model (the type is registered here)
        assert client.result(job.id) == result
        assert client.result(str(job.id), HashOut) == result
        seen = client.get(job.id)
        assert (seen.status, seen.type, seen.id) == ("COMPLETED", "cpu.hash", job.id)


async def test_the_async_client_does_the_same(system: System) -> None:
    async with AsyncClient(system.base_url, api_key=system.api_key) as client:
        job = await client.job(sleep).submit(SleepIn(seconds=0.2, steps=2))
        result = await job.result(timeout=60)
        assert result == SleepOut(slept_s=0.2)
        events = await client.events(job.id)
        assert [e.event_type for e in events][:2] == ["Submitted", "Scheduled"]
        assert events[-1].event_type == "Completed"
        with pytest.raises(NotFoundError):
            await client.get(uuid.uuid4())


def test_submit_many_answers_each_job_or_its_errors(system: System) -> None:
    with Client(system.base_url, api_key=system.api_key) as client:
        items = client.submit_many(
            [
                SubmitJob(type="cpu.hash", payload={"text": "a"}),
                {"type": "cpu.hash", "payload": {"text": "b"}, "priority": 9},
                {"type": "cpu.hash", "payload": {"txt": "c"}},
            ]
        )
        assert [item.index for item in items] == [0, 1, 2]
        assert items[0].id and items[1].id and items[2].id is None
        assert items[2].errors and "payload.text" in {e["field"] for e in items[2].errors}
        for item, text in zip(items[:2], (b"a", b"b"), strict=True):
            assert item.id is not None
            result = client.result(item.id, HashOut, timeout=60)
            assert result.digest == hashlib.sha256(text).hexdigest()
        assert client.get(items[1].id).priority == 9


def test_cancel_events_and_the_typed_outcome_of_a_cancelled_job(system: System) -> None:
    with Client(system.base_url, api_key=system.api_key) as client:
        # Given a long job running on a worker
        job = client.job(sleep).submit(SleepIn(seconds=120, steps=120))
        wait_for(lambda: client.get(job.id).status == "RUNNING", 30, "the job to run")
        # When it is cancelled with a reason
        job.cancel("changed my mind")
        # Then it ends CANCELLED, and asking its result says so
        assert job.wait(timeout=30).status == "CANCELLED"
        with pytest.raises(JobCancelledError) as cancelled:
            job.result(timeout=5)
        assert cancelled.value.job.status == "CANCELLED"
        # And its history records who asked and why
        events = client.events(job.id)
        kinds = [e.event_type for e in events]
        assert kinds[0] == "Submitted" and kinds[-1] == "Cancelled" and "CancelRequested" in kinds
        asked = events[kinds.index("CancelRequested")]
        assert asked.reason == "changed my mind" and asked.actor.startswith("key:")
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        # And cancelling it again is a conflict carrying the problem document
        with pytest.raises(ConflictError) as again:
            client.cancel(job.id)
        assert again.value.problem["status"] == 409 and again.value.status == 409


def test_state_gives_the_job_as_it_was_at_a_time(system: System) -> None:
    with Client(system.base_url, api_key=system.api_key) as client:
        job = client.job(hash_text).submit(HashIn(text="then"))
        job.wait(timeout=60)
        events = client.events(job.id)
        first = client.state(job.id, version=1)
        assert (first.status, first.version, first.source) == ("PENDING", 1, "log")
        last = client.state(job.id, at=events[-1].timestamp)
        assert (last.status, last.version) == ("COMPLETED", len(events))
        assert client.state(job.id, at=datetime.now(UTC)).version == len(events)
        with pytest.raises(NotFoundError) as before:
            client.state(job.id, at=datetime(2001, 1, 1, tzinfo=UTC))
        assert before.value.problem["status"] == 404


def test_errors_are_typed_and_carry_the_problem_document(system: System) -> None:
    with Client(system.base_url, api_key=system.api_key) as client:
        mine = client.submit("cpu.hash", {"text": "mine"}).id
        # A bad payload: 422 naming the field, not sent again
        recording = Recording()
        with (
            Client(system.base_url, api_key=system.api_key, transport=recording) as checked,
            pytest.raises(InvalidRequestError) as invalid,
        ):
            checked.submit("cpu.hash", {"text": 5})
        assert invalid.value.fields == ["payload.text"]
        assert invalid.value.problem["status"] == 422 and invalid.value.problem["errors"]
        assert len(recording.sent) == 1
        with pytest.raises(InvalidRequestError) as unknown:
            client.submit("no.such.type", {})
        assert unknown.value.fields == ["type"]
    # A wrong key: 401
    with Client(system.base_url, api_key="jt_nobody_0000") as wrong:
        with pytest.raises(UnauthorizedError) as unauthorized:
            wrong.get(mine)
        assert unauthorized.value.problem["title"] == "Unauthorized"
    # Another tenant's job: the 404 of a job that does not exist
    with Client(system.base_url, api_key=new_key(system, ("read",))) as other:
        with pytest.raises(NotFoundError) as theirs:
            other.get(mine)
        with pytest.raises(NotFoundError) as nobody:
            other.get(uuid.uuid4())
        assert theirs.value.problem.keys() == nobody.value.problem.keys()
        with pytest.raises(NotFoundError):
            other.wait(mine, timeout=1)
        # A key without the scope: 403 naming it
        with pytest.raises(ForbiddenError) as forbidden:
            other.submit("cpu.hash", {"text": "x"})
        assert forbidden.value.scope == "submit" and forbidden.value.problem["status"] == 403


@pytest.mark.parametrize("given_key", [None, "caller-chosen"])
def test_a_submission_whose_answer_was_lost_is_sent_again_with_its_key_leaving_one_job(
    system: System, given_key: str | None
) -> None:
    # Given a tenant of its own, and a network that loses the answer to the first submission
    key = new_key(system)
    recording = Recording(lose={"/v1/jobs": 1})
    # When a job is submitted (the server commits it; the client hears nothing and retries)
    with Client(system.base_url, key, transport=recording, retry=FAST_RETRIES) as client:
        accepted = client.submit("cpu.hash", {"text": "once"}, idempotency_key=given_key)
        client.wait(accepted.id, timeout=60)
    # Then the second send met the job the first one created: the tenant has exactly that one
    # job (the projection applies in log order: once it is listed, an earlier job would be too)
    wait_for(lambda: str(accepted.id) in listed(system, key), 30, "the job to be listed")
    assert listed(system, key) == [str(accepted.id)]
    assert accepted.replayed
    # And it did because both sends were the same request, idempotency key included
    sent = [json.loads(r.content) for r in recording.requests("POST", "/v1/jobs")]
    assert len(sent) == 2 and sent[0] == sent[1]


async def test_the_async_client_retries_with_the_key_and_waits_without_polling(
    system: System,
) -> None:
    # Given a tenant of its own, and a network that loses the first submission's answer
    key = new_key(system)
    recording = AsyncRecording(lose={"/v1/jobs": 1})
    async with AsyncClient(system.base_url, key, transport=recording, retry=FAST_RETRIES) as c:
        # When a job of about 3 s is submitted, then waited for
        job = await c.job(sleep).submit(SleepIn(seconds=3, steps=3))
        started = time.monotonic()
        assert (await job.wait(timeout=60)).status == "COMPLETED"
        elapsed = time.monotonic() - started
    # Then the retry met the first send's job: the tenant has that one job
    assert job.accepted.replayed
    wait_for(lambda: str(job.id) in listed(system, key), 30, "the job to be listed")
    assert listed(system, key) == [str(job.id)]
    # And the wait was held by the server, about one request per 2 s
    waits = [r for r in recording.sent if r.url.path.endswith("/wait")]
    assert 1 <= len(waits) <= elapsed / 1.5 + 1, (len(waits), elapsed)


def test_a_batch_whose_answer_was_lost_is_sent_again_leaving_one_job_each(
    system: System,
) -> None:
    key = new_key(system)
    recording = Recording(lose={"/v1/jobs/batch": 1})
    with Client(system.base_url, key, transport=recording, retry=FAST_RETRIES) as client:
        items = client.submit_many([{"type": "noop"}, {"type": "noop"}])
    assert [item.replayed for item in items] == [True, True]
    ids = {str(item.id) for item in items}
    wait_for(lambda: ids <= set(listed(system, key)), 30, "the jobs to be listed")
    assert sorted(listed(system, key)) == sorted(ids)


def test_a_refused_submission_is_sent_again_after_retry_after(system: System) -> None:
    recording = Recording(refuse=2)
    with Client(system.base_url, system.api_key, transport=recording, retry=FAST_RETRIES) as c:
        accepted = c.submit("noop", {})
    assert len(recording.sent) == 3 and not accepted.replayed
    keys = {json.loads(r.content)["idempotency_key"] for r in recording.sent}
    assert len(keys) == 1


def test_no_server_at_all_is_tried_a_bounded_number_of_times(system: System) -> None:
    closed = httpx.HTTPTransport()
    sent: list[httpx.Request] = []

    class Counting(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return closed.handle_request(request)

    with (
        Client("http://127.0.0.1:9", "jt_x_y", transport=Counting(), retry=FAST_RETRIES) as c,
        pytest.raises(httpx.ConnectError),
    ):
        c.submit("noop", {})
    assert len(sent) == FAST_RETRIES.attempts


def test_wait_holds_each_request_on_the_server_instead_of_polling(system: System) -> None:
    # Given a job that takes about 3 s
    recording = Recording()
    with Client(system.base_url, system.api_key, transport=recording) as client:
        accepted = client.submit("io.sleep", {"seconds": 3, "steps": 3})
        # When the client waits for it
        started = time.monotonic()
        job = client.wait(accepted.id, timeout=60)
        elapsed = time.monotonic() - started
    # Then it ended, and each request was held up to the server's 2 s (the tests' setting):
    # about one request per 2 s, where a poll every 0.1 s would have sent 30
    assert job.status == "COMPLETED"
    waits = recording.requests("GET", "/wait")
    assert 1 <= len(waits) <= elapsed / 1.5 + 1, (len(waits), elapsed)
    assert not recording.requests("GET", f"/v1/jobs/{accepted.id}")


def test_wait_falls_back_to_polling_with_backoff_without_the_wait_endpoint(
    system: System,
) -> None:
    # Given a submitter without the wait endpoint (an older one), and a job of about 3 s
    recording = Recording(no_wait=True)
    with Client(system.base_url, system.api_key, transport=recording) as client:
        accepted = client.submit("io.sleep", {"seconds": 3, "steps": 3})
        # When the client waits for it
        job = client.wait(accepted.id, timeout=60)
    # Then it tried the wait once, then read the job with pauses doubling from 0.1 s to 2 s
    assert job.status == "COMPLETED"
    assert len(recording.requests("GET", "/wait")) == 1
    reads = recording.requests("GET", f"/v1/jobs/{accepted.id}")
    assert 2 <= len(reads) <= 12, len(reads)


def test_the_readme_s_example_runs(system: System) -> None:
    # Given the Python example of the README's "From Python", pointed at the test's system
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no Python example under From Python"
    code = match.group(1)
    code = code.replace('Path(".jobtrail/api-key").read_text().strip()', repr(system.api_key))
    code = code.replace('"http://127.0.0.1:8080"', repr(system.base_url))
    # When it runs
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    # Then it printed the job's id and digest, then its history through Completed
    lines = printed.getvalue().splitlines()
    assert lines[0].endswith(hashlib.sha256(b"hi").hexdigest())
    assert lines[1].startswith("1 Submitted key:") and "Completed" in lines[-1]
