"""The error answers of the API in its OpenAPI document.

The API answers errors with RFC 9457 problem documents (``application/problem+json``), and most
come from the app's middleware and exception handlers (app.py, server.py), not from the routes:
FastAPI cannot see them, and documents instead a 422 body the API never sends. ``document``
corrects the generated document so that it lists every status code an operation can answer,
each with its media type and schema; tests/e2e/test_schemathesis.py holds the running system to
it.

Which operation answers what follows from the operation itself, by rule:

- every operation but the probes (auth.PUBLIC_PATHS): the bearer key (security scheme
  ``apiKey``), 401 (no valid key), 403 (the key lacks the operation's scope), 429 (over the
  key's rate limit or the tenant's pending jobs, with Retry-After);
- every operation: 413 (body over the limit), 414 and 431 (request line or head over the
  limit), 422 (an X-Request-Id or X-Correlation-Id the bus cannot carry, or a parameter or body
  the operation refuses);
- an operation with a body: 415 (not declared JSON);
- an operation under /v1/: 503 + Retry-After when the event store or Redis is unavailable, or
  the store's commit queue is full (a wait: when the submitter has as many waits as it allows);
- an operation on one job (``{job_id}`` in its path): 404 for a job that does not exist, or did
  not yet at the ``at`` or ``version`` asked;
- submitting, cancelling and requeueing: 409 (an idempotency key reused with another request,
  a job that already ended or is not FAILED);
- /readyz: 503 with the same body as its 200, naming the dependency that does not answer;
- /metrics: its 200 is Prometheus' text format.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from services.submitter.auth import PUBLIC_PATHS

PROBLEM_MEDIA_TYPE = "application/problem+json"
_REF = "#/components/schemas/{model}"


class ProblemError(BaseModel):
    """One thing wrong with the request."""

    model_config = ConfigDict(extra="allow")
    field: str = Field(description="where: body.<field>, query.<name>, header.<name>, ...")
    message: str | None
    type: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemError] | None = Field(
        default=None, description="with a 415 or 422: each field that is wrong, and why"
    )


class Readiness(BaseModel):
    """What /readyz answers: ok or unavailable, and each dependency's answer."""

    status: str
    checks: dict[str, str]


_AUTH = {
    "401": "No valid API key (missing, malformed, unknown or revoked)",
    "403": "The key lacks the scope this operation needs (the problem names it)",
    "429": "Over the key's rate limit or the tenant's pending jobs; see Retry-After",
}
_SHARED = {
    "413": "The body is over the size limit",
    "414": "The request line is over the size limit",
    "431": "The request line and header fields together are over the size limit",
    "422": "The request is invalid: the problem document names each field (body.<field>, "
    "query.<name>, header.<name>) and what is wrong with it",
}
_BODY = {"415": "The body is not declared application/json (the problem names the type expected)"}
_STORE = {
    "503": "The event store or Redis is unavailable, or (a wait) the submitter has as many waits "
    "as it allows; retry after Retry-After seconds"
}
_ONE_JOB = {"404": "No such job (or it did not exist yet at the time or version asked)"}
_CONFLICT = {"409": "The job's state forbids it, or the idempotency key was used for another job"}
_CONFLICTS = {("post", "/v1/jobs"), ("post", "/v1/jobs/{job_id}/cancel")}
_CONFLICTS |= {("post", "/v1/jobs/{job_id}/requeue")}


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": _REF.format(model="Problem")}
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}


def _statuses(method: str, path: str, operation: dict[str, Any]) -> dict[str, str]:
    statuses = dict(_SHARED)
    if path not in PUBLIC_PATHS:
        statuses |= _AUTH
    if "requestBody" in operation:
        statuses |= _BODY
    if path.startswith("/v1/"):
        statuses |= _STORE
    if "{job_id}" in path:
        statuses |= _ONE_JOB
    if (method, path) in _CONFLICTS:
        statuses |= _CONFLICT
    return statuses


def document(app: FastAPI) -> None:
    """Makes ``app.openapi()`` list the error answers of every operation (the module's rules)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {})["apiKey"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key from `jobtrail keys create` (jt_<id>_<secret>)",
            }
            schemas = components.setdefault("schemas", {})
            for model in (Problem, Readiness):
                found = model.model_json_schema(ref_template=_REF)
                schemas.update(found.pop("$defs", {}))
                schemas[model.__name__] = found
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    if path not in PUBLIC_PATHS:
                        operation["security"] = [{"apiKey": []}]
                    responses = operation.setdefault("responses", {})
                    for status, description in _statuses(method, path, operation).items():
                        if status == "422" or status not in responses:  # FastAPI's 422 is wrong
                            responses[status] = _problem(description)
            readyz = schema["paths"]["/readyz"]["get"]["responses"]
            readiness = {"schema": {"$ref": _REF.format(model="Readiness")}}
            readyz["200"]["content"] = {"application/json": readiness}
            readyz["503"] = {
                "description": "A dependency does not answer (named in checks)",
                "content": {"application/json": readiness},
            }
            metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]
            metrics["content"] = {"text/plain": {"schema": {"type": "string"}}}
            for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body
                schemas.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
