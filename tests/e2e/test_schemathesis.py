"""Schemathesis against the real system, driven by the committed OpenAPI document.

Every operation of contracts/openapi.json (the file ``python -m services.specs`` writes, not the
live /openapi.json: the committed contract is what clients build on) is called with generated
requests, valid and invalid, on the e2e ``system`` (four services as processes, a fresh
database). Every answer must be no 5xx; carry a status code the document lists for that
operation, its media type, a body matching its schema and the headers it documents; a method
the path does not answer must get 405 with Allow; a request the schema refuses (a bad parameter
or body, a missing required header) must get a 4xx.

Each request carries ``Authorization: Bearer <key>``, a key with the admin scope created in the
services' database for this run, so the run reaches past authentication to every operation.

Bounded: the examples phase (the document's own examples, when it has some), the coverage phase
(boundary and invalid values of each parameter and body field, unexpected methods: a few dozen
requests per operation) and ``MAX_EXAMPLES`` fuzzed requests per operation, each operation under
a time limit; about 30 s in all on a 2-core machine. No stateful phase (sequences of calls: the
links between operations are not documented, and a run of them costs minutes); instead, the
hooks below make half of the job ids name real jobs and half of the submissions real job types.
Deterministic (derandomised, fixed seed, no example database), so CI sees the same requests every
time. No operation is left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, unsupported_method
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared import keys
from tests.e2e.helpers import wait_for
from tests.processes import System

pytestmark = pytest.mark.e2e

OPENAPI = Path(__file__).resolve().parents[2] / "contracts" / "openapi.json"
MAX_EXAMPLES = 50
"""Fuzzed requests per operation (the examples and coverage phases add their own, bounded by
the schema: a few dozen per operation)."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    unsupported_method,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.missing_required_header,
]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 11,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # the key is ours, sent on every request: no generated Authorization header
            "with-security-parameters": False,
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {
            # a body or head over the limit is refused too, before it is read (413, 414, 431)
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 414, 415, 422, 429, 431]
            },
        },
        "request-timeout": 10,
    }
)

schema = schemathesis.openapi.from_path(OPENAPI, config=CONFIG)

SEEDS: list[tuple[dict[str, Any], str]] = [
    ({"type": "cpu.hash", "payload": {"text": "schemathesis"}}, "COMPLETED"),
    ({"type": "test.flaky", "payload": {"fail_times": 5, "retryable": False}}, "FAILED"),
    ({"type": "io.sleep", "payload": {"seconds": 600, "steps": 600}}, "RUNNING"),
]
SEEDED: list[str] = []
"""The ids of the jobs submitted from SEEDS, filled by the ``seeded`` fixture before any case is
drawn."""


REAL_JOBS: list[dict[str, Any]] = [
    {"type": "noop", "payload": {}},
    {"type": "cpu.hash", "payload": {"text": "schemathesis"}},
    {"type": "test.flaky", "payload": {"fail_times": 1}},
]


def _with_real_job(body: Any, index: int) -> Any:
    """``body`` with a known job type and its payload, its other fields as generated."""
    return body | REAL_JOBS[index % len(REAL_JOBS)] if isinstance(body, dict) else body


@schema.hook
def before_generate_body(context: schemathesis.HookContext, strategy: Any) -> Any:
    """Half of the submissions name a job type the workers know, with a valid payload, and
    keep the other fields as generated (priority, attempts, timeout, run_at, queue, key): a
    random type is refused before most of the submission path runs."""
    label = context.operation.label if context.operation else ""
    if label == "POST /v1/jobs":
        real = st.tuples(strategy, st.integers(0, len(REAL_JOBS) - 1))
        return st.one_of(strategy, real.map(lambda pair: _with_real_job(*pair)))
    if label == "POST /v1/jobs/batch":

        def real_jobs(body: Any) -> Any:
            if isinstance(body, dict) and isinstance(body.get("jobs"), list):
                jobs = [_with_real_job(job, i) for i, job in enumerate(body["jobs"])]
                return body | {"jobs": jobs}
            return body

        return st.one_of(strategy, strategy.map(real_jobs))
    return strategy


@schema.hook
def before_generate_path_parameters(context: schemathesis.HookContext, strategy: Any) -> Any:
    """Half of the job ids drawn name a seeded job, so the operations on one job also answer
    for a real job (200, 202, 409), not only 404 for a random id."""
    real = st.integers(0, len(SEEDS) - 1).map(lambda i: {"job_id": SEEDED[i]})
    return st.one_of(strategy, real)


@pytest.fixture(scope="module")
def api_key(e2e_postgres_url: str, system: System) -> Iterator[str]:
    """A key with every scope in the services' database; once the submitter knows it (it reads
    new keys within a second), requests with it are answered, not refused with 401."""
    with psycopg.connect(e2e_postgres_url, autocommit=True) as conn:
        keys.create_table(conn)
        info, key = keys.create_key(conn, "default", ["admin"], name="schemathesis")
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 15
    while httpx.get(f"{system.base_url}/v1/jobs?limit=1", headers=headers).status_code == 401:
        assert time.monotonic() < deadline, "the submitter never accepted the new key"
        time.sleep(0.2)
    yield key
    with psycopg.connect(e2e_postgres_url, autocommit=True) as conn:
        keys.revoke_key(conn, info.id)


@pytest.fixture(scope="module")
def seeded(system: System, api_key: str) -> Iterator[list[str]]:
    """A few real jobs (completed, failed, running), so lists and reads answer with real jobs;
    the running one is cancelled at the end (the workers would wait for it when they stop)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=system.base_url, headers=headers, timeout=10) as http:
        for body, status in SEEDS:
            response = http.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            wait_for(
                lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == status,  # noqa: B023
                30,
                f"{body['type']} {status}",
            )
            SEEDED.append(job_id)
        yield SEEDED
        http.post(f"/v1/jobs/{SEEDED[-1]}/cancel", json={"reason": "the schemathesis run ended"})


@pytest.mark.timeout(120)  # one operation, with the system's start when it runs first
@schema.parametrize()
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case, system: System, api_key: str, seeded: list[str]
) -> None:
    case.call_and_validate(
        base_url=system.base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        checks=CHECKS,
    )
