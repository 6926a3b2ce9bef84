"""The routes of the submitter's API: the body's media type checked by the route itself, and a
fast path for ``POST /v1/jobs`` and ``GET /v1/jobs/{id}``, the requests clients make most.

Both were a cost on every request before: the 415 check was a router dependency, which FastAPI
solves through its dependency machinery for each request, and a plain submission went through
FastAPI's generic request handler (body parsed to Python objects, then validated, parameters
solved one by one, the answer validated and encoded). Profiled under load these were about a
third of the submitter's CPU per request (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from uuid import UUID

from fastapi import Request, Response
from fastapi.routing import APIRoute, serialize_response
from pydantic import BaseModel, ValidationError
from starlette.convertors import StringConvertor, register_url_convertor

JSON_MEDIA_TYPE = "application/json"

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class JobIdConvertor(StringConvertor):
    """The ``{job_id:job}`` segment of ``/v1/jobs/{job_id:job}``: any segment but ``batch``,
    so ``/v1/jobs/batch`` is only the batch route. Without it ``GET /v1/jobs/batch`` was read as
    a job id (a 422) and every 405 there listed GET in Allow, though the OpenAPI document gives
    ``/v1/jobs/batch`` POST alone. Any other id that is not a UUID is still a 422 naming it."""

    regex = "(?!batch$)[^/]+"


register_url_convertor("job", JobIdConvertor())


class UnsupportedMediaTypeError(Exception):
    """A body sent as something other than JSON to an endpoint that reads JSON."""

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"Content-Type {content_type!r} is not accepted here: send the body as "
            f"{JSON_MEDIA_TYPE}"
        )


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def check_media_type(request: Request) -> None:
    """Refuses a body that is not declared JSON with 415 naming the type expected: without it
    FastAPI validates the raw text against the model and answers 422 "Input should be a valid
    dictionary" naming no field (also when Content-Type is missing: FastAPI reads only bodies
    declared JSON). An empty body is left to the route (the cancel body is optional)."""
    headers = request.headers
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if has_body:
        content_type = headers.get("content-type", "")
        if not is_json(content_type):
            raise UnsupportedMediaTypeError(content_type or "(none)")


class MediaRoute(APIRoute):
    """An API route that, when it reads a body, first checks that the body is declared JSON
    (``check_media_type``); the answer is the same 415 from any route."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            check_media_type(request)
            return await handler(request)

        return checked


class FastRoute(MediaRoute):
    """A route with a fast path for its commonest request, FastAPI's generic path for the rest.

    The fast path gives the endpoint what FastAPI would have given it and builds the answer
    with FastAPI's own serialisation of the response model; it skips FastAPI's generic request
    handling (dependencies solved one by one, the body parsed to Python objects and validated
    after). Anything unusual takes the generic path, so every error answer is FastAPI's own;
    the fast path only ever answers what FastAPI would have answered (tests/integration/
    test_api_fast_path.py sends the same requests down both paths). ``fast`` turns it off."""

    fast = True

    async def answer(self, request: Request, **values: Any) -> Response:
        """Calls the endpoint with ``values`` (and, as FastAPI does, a sub-response for the
        headers it sets when it takes one) and builds FastAPI's answer from what it returns."""
        sub_response = Response()
        del sub_response.headers["content-length"]
        sub_response.status_code = None  # type: ignore[assignment]
        if self.dependant.response_param_name:
            values[self.dependant.response_param_name] = sub_response
        raw = await self.endpoint(request=request, **values)
        if isinstance(raw, Response):
            return raw
        content = await serialize_response(
            field=self.response_field,
            response_content=raw,
            include=self.response_model_include,
            exclude=self.response_model_exclude,
            by_alias=self.response_model_by_alias,
            exclude_unset=self.response_model_exclude_unset,
            exclude_defaults=self.response_model_exclude_defaults,
            exclude_none=self.response_model_exclude_none,
            is_coroutine=True,
            dump_json=True,
        )
        response = Response(
            content=content,
            status_code=self.status_code or sub_response.status_code or 200,
            media_type=JSON_MEDIA_TYPE,
        )
        response.headers.raw.extend(sub_response.headers.raw)
        return response


class SubmitRoute(FastRoute):
    """``POST /v1/jobs``; its fast path serves a JSON body the model accepts, without an
    Idempotency-Key header. The body is parsed and validated in one step by the model's
    ``model_validate_json`` (no Python objects in between). A body the model refuses or cannot
    parse takes FastAPI's path, which names the problem its own way."""

    def get_route_handler(self) -> Handler:
        generic = super().get_route_handler()
        body_field = self.body_field
        assert body_field is not None and body_field.name == "job"
        model = body_field.field_info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        route = self

        async def handler(request: Request) -> Response:
            headers = request.headers
            content_type = headers.get("content-type", "")
            if (
                not route.fast
                or content_type.split(";", 1)[0].strip().lower() != JSON_MEDIA_TYPE
                or "idempotency-key" in headers
            ):
                return await generic(request)
            body = await request.body()
            try:
                job = model.model_validate_json(body) if body else None
            except ValidationError:
                job = None
            if job is None:
                return await generic(request)
            return await route.answer(request, job=job, idempotency_key=None)

        return handler


class ReadRoute(FastRoute):
    """``GET /v1/jobs/{job_id}``; its fast path serves a job id in its canonical form
    (lower-case, with dashes) and no query (``at`` or ``version``)."""

    def get_route_handler(self) -> Handler:
        generic = super().get_route_handler()
        route = self

        async def handler(request: Request) -> Response:
            raw = request.scope.get("path_params", {}).get("job_id", "")
            if not route.fast or request.scope.get("query_string") or len(raw) != 36:
                return await generic(request)
            try:
                job_id = UUID(raw)
            except ValueError:
                return await generic(request)
            if str(job_id) != raw:
                return await generic(request)
            return await route.answer(request, job_id=job_id, at=None, version=None)

        return handler
