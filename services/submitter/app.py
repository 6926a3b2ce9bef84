"""The FastAPI application: error mapping, the body-size limit, request ids (the body's media
type is checked by the routes themselves, services/submitter/media.py)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.submitter import problems, ui
from services.submitter.api import problem, router
from services.submitter.auth import Authenticate, MissingScopeError, RateLimitedError
from services.submitter.deps import Deps
from services.submitter.handlers import InvalidRequestError
from services.submitter.media import JSON_MEDIA_TYPE, UnsupportedMediaTypeError
from services.submitter.ops_api import router as ops_router
from services.submitter.server import MAX_HEAD_BYTES, HeadLimit, problem_body, send_problem
from services.submitter.wait_api import router as wait_router
from shared import tracing
from shared.domain import IdempotencyConflictError, JobError
from shared.domain.cause import MAX_MESSAGE_ID, MESSAGE_ID, printable
from shared.domain.errors import JobNotFoundError
from shared.eventstore import StoreOverloadedError, UnstorableEventError
from shared.retrying import TRANSIENT

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413, also chunked ones, without buffering more."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send)
            return
        # Read the body here, stopping as soon as it passes the limit, then replay it: memory
        # stays bounded by the limit whatever the client sends (chunked bodies included).
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        detail = f"request body over {self.max_bytes} bytes"
        body = problem_body(413, "Payload too large", detail)
        await send_problem(send, 413, body, ((b"connection", b"close"),))


MESSAGE_ID_HEADERS = ("X-Request-Id", "X-Correlation-Id")


class RequestId:
    """Gives every request an id (``request.state.request_id``, echoed as ``X-Request-Id``) and
    refuses, with 422 naming the header, an X-Request-Id or X-Correlation-Id the bus could not
    carry: both are recorded in the job's events and travel in every message relayed from them.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` ran every request through an
    extra task and a memory stream, a third of the submitter's CPU under load
    (docs/performance.md)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        for header in MESSAGE_ID_HEADERS:
            value = headers.get(header)
            if value and not MESSAGE_ID.fullmatch(value):  # an empty header counts as absent
                message = f"must be 1 to {MAX_MESSAGE_ID} printable ASCII characters"
                errors = [{"field": f"header.{header}", "message": message, "type": "value_error"}]
                response = problem(
                    422, "Invalid request", f"header.{header}: {message}", errors=errors
                )
                await response(scope, receive, send)
                return
        request_id = headers.get("X-Request-Id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class Traced:
    """The server span of every request when tracing is on (shared/tracing.py), continuing a
    caller's ``traceparent``; named ``METHOD /route`` once the route is known. Added only when
    tracing is on: otherwise no request pays for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = {"traceparent": Headers(scope=scope).get("traceparent")}
        with tracing.server(method, headers, path=scope["path"]) as span:
            await self.app(scope, receive, send)
            route = scope.get("route")
            if route is not None and hasattr(route, "path"):
                span.update_name(f"{method} {route.path}")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed(request: Request) -> str:
    """Every method the request's path answers to, for a 405's Allow header: Starlette names only
    the methods of the first route that matched the path, and /v1/jobs is two routes (GET and
    POST). Each method is tried against the whole router, nested routers included."""

    def answers(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes)

    return ", ".join(method for method in _METHODS if answers(method))


def _field(loc: tuple[Any, ...], kind: str | None = None) -> str:
    if kind == "json_invalid":
        return "body"
    parts = [printable(str(p)) for p in loc]  # a key may hold a lone surrogate
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] if parts[0] == "body" else parts
    return ".".join(parts)


def create_app(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    *,
    max_body_bytes: int = 1_048_576,
    max_head_bytes: int = MAX_HEAD_BYTES,
) -> FastAPI:
    """The API; ``lifespan`` builds and tears down app.state.deps."""
    app = FastAPI(
        title="jobtrail",
        version="0.1.0",
        description="Submit jobs, read their status and their whole audited history.",
        lifespan=lifespan,
        # no OpenTelemetry hooks: the service exports Prometheus metrics, and the check for a
        # configured tracer or meter ran on every request
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    # The routes on the app's own router: an included router is one more layer of matching and
    # dispatch on every request
    app.router.routes.extend([*router.routes, *ops_router.routes, *wait_router.routes])
    app.router.routes.extend(ui.routes)  # the dashboard, /ui (docs/dashboard.md)
    problems.document(app)  # the error answers in the OpenAPI document

    app.add_middleware(RequestId)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(Authenticate)  # before any body is read
    app.add_middleware(HeadLimit, max_bytes=max_head_bytes)
    if tracing.ENABLED:
        app.add_middleware(Traced)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Any:
        errors = [
            {
                "field": _field(tuple(e.get("loc", ())), e.get("type")),
                "message": e.get("msg"),
                "type": e.get("type"),
            }
            for e in exc.errors()
        ]
        return problem(
            422,
            "Invalid request",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            errors=errors,
        )

    @app.exception_handler(InvalidRequestError)
    async def invalid_job(_: Request, exc: InvalidRequestError) -> Any:
        return problem(422, "Invalid job", str(exc), errors=exc.errors)

    @app.exception_handler(UnstorableEventError)
    async def unstorable(_: Request, exc: UnstorableEventError) -> Any:
        # the contracts refuse such text first; this is the store's own word, never a 500
        errors = [{"field": "body", "message": str(exc), "type": "value_error"}]
        return problem(422, "Invalid request", str(exc), errors=errors)

    @app.exception_handler(MissingScopeError)
    async def forbidden(_: Request, exc: MissingScopeError) -> Any:
        return problem(403, "Forbidden", str(exc), scope=exc.scope)

    @app.exception_handler(RateLimitedError)
    async def limited(_: Request, exc: RateLimitedError) -> Any:
        response = problem(429, "Too many requests", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(JobNotFoundError)
    async def not_found(_: Request, exc: JobNotFoundError) -> Any:
        return problem(404, "Not found", str(exc))

    @app.exception_handler(IdempotencyConflictError)
    async def conflict_key(_: Request, exc: IdempotencyConflictError) -> Any:
        return problem(409, "Idempotency key reused", str(exc), job_id=str(exc.job_id))

    @app.exception_handler(JobError)
    async def conflict(_: Request, exc: JobError) -> Any:
        return problem(409, "Conflict", str(exc))

    @app.exception_handler(UnsupportedMediaTypeError)
    async def unsupported_media_type(_: Request, exc: UnsupportedMediaTypeError) -> Any:
        detail = str(exc)
        errors = [{"field": "header.content-type", "message": detail}]
        response = problem(
            415, "Unsupported media type", detail, expected=JSON_MEDIA_TYPE, errors=errors
        )
        response.headers["Accept-Post"] = JSON_MEDIA_TYPE  # what a POST here accepts (W3C LDP)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # FastAPI's answer when the JSON parser itself fails (nesting too deep for it)
            detail = "body: cannot be parsed as JSON (malformed or nested too deeply)"
            errors = [{"field": "body", "message": detail, "type": "json_invalid"}]
            return problem(422, "Invalid request", detail, errors=errors)
        response = problem(exc.status_code, "Error", str(exc.detail))
        # The exception's headers are part of the answer: Allow on a 405 (RFC 9110 requires
        # it), Retry-After on a 503, WWW-Authenticate on a 401
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = _allowed(request)
        return response

    for transient in TRANSIENT:

        @app.exception_handler(transient)
        async def store_unavailable(_: Request, exc: Exception) -> Any:
            return unavailable("the event store", exc)

    @app.exception_handler(StoreOverloadedError)  # after TRANSIENT, which includes it
    async def overloaded(_: Request, exc: StoreOverloadedError) -> Any:
        response = problem(503, "Overloaded", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    # Redis does not answer (the list is read from it alone): a 503 to retry, never a 500
    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_unavailable(_: Request, exc: Exception) -> Any:
        return unavailable("Redis", exc)

    return app


def unavailable(what: str, exc: Exception) -> JSONResponse:
    """The 503 of a request that needed ``what`` and found it away: retry in 5 s."""
    log.warning("answering 503: %r", exc)
    response = problem(503, "Unavailable", f"{what} is unavailable; retry later")
    response.headers["Retry-After"] = "5"
    return response


def lifespan_for(deps_factory: Callable[[], AbstractAsyncContextManager[Deps]]) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with deps_factory() as deps:
            app.state.deps = deps
            yield

    return lifespan
