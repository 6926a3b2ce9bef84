"""Who is calling: every request but the health probes carries ``Authorization: Bearer <key>``.

``Authenticate`` is a plain ASGI middleware in front of the API. It checks the key against the
``KeyRing`` in memory (shared/keys.py: no query per request; ``refresh_keys`` re-reads the changed
rows every ``JOBTRAIL_AUTH_REFRESH_S``, so a revoked key stops working within a second), applies
the key's rate limit, and puts the ``Principal`` in the request's state. A missing, malformed,
unknown or revoked key is answered 401 with a problem document before any body is read.

What a principal may do is checked by each endpoint (``require``): its scope (403 naming the
scope) and its tenant (another tenant's job is 404, the answer for a job that does not exist).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp, Receive, Scope, Send

from services.submitter.server import send_problem
from shared.domain import DEFAULT_TENANT
from shared.keys import SCOPES, KeyRing, Principal

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered without a key: the probes of an orchestrator, which carry no secret."""

PUBLIC_PREFIX = "/ui"
"""The dashboard's static files (services/submitter/ui/pages.py): they hold no data; the page
sends the operator's key with every API request it makes."""


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path == PUBLIC_PREFIX or path.startswith(PUBLIC_PREFIX + "/")


ANONYMOUS = "anonymous"


class AuthSettings(BaseSettings):
    """Authentication of the API (prefix JOBTRAIL_AUTH_)."""

    model_config = SettingsConfigDict(env_prefix="JOBTRAIL_AUTH_", extra="ignore")

    anonymous: bool = Field(
        default=False,
        description="development only: a request without a key acts as an anonymous principal "
        "with every scope in anonymous_tenant (a warning is logged at start)",
    )
    anonymous_tenant: str = Field(default=DEFAULT_TENANT, pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    refresh_s: float = Field(
        default=0.5, gt=0, le=10, description="how often the key ring re-reads changed keys"
    )


def anonymous_principal(settings: AuthSettings) -> Principal | None:
    if not settings.anonymous:
        return None
    log.warning(
        "JOBTRAIL_AUTH_ANONYMOUS is on: requests without a key act with every scope in tenant "
        "%r. Development only: never expose this submitter.",
        settings.anonymous_tenant,
    )
    return Principal(ANONYMOUS, settings.anonymous_tenant, frozenset(SCOPES), "anonymous")


class MissingScopeError(Exception):
    """The principal's key lacks the scope an endpoint needs (403)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this API key lacks the {scope!r} scope")
        self.scope = scope


class RateLimitedError(Exception):
    """Too many requests for a key, or too many pending jobs for a tenant (429)."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


def require(state: Any, scope: str) -> Principal:
    """The request's principal when it has ``scope``; MissingScopeError otherwise."""
    principal: Principal = state.principal
    if not principal.allows(scope):
        raise MissingScopeError(scope)
    return principal


_UNAUTHORIZED = (
    b'{"type":"about:blank","title":"Unauthorized","status":401,'
    b'"detail":"send a valid API key: Authorization: Bearer jt_..."}'
)
_RATE_LIMITED = (
    b'{"type":"about:blank","title":"Too many requests","status":429,'
    b'"detail":"this API key sent more requests than its rate limit allows"}'
)


class Authenticate:
    """Refuses, with 401, a request whose bearer key the key ring does not know (or 429 when the
    key is over its rate); puts the principal in ``scope["state"]``. The key ring and the
    limiter are read from the app's dependencies (``app.state.deps``), built at start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        deps = scope["app"].state.deps
        principal: Principal | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, key = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    principal = deps.keys.check(key.strip())
                break
        else:
            principal = deps.anonymous
        if principal is None:
            await send_problem(
                send, 401, _UNAUTHORIZED, ((b"www-authenticate", b'Bearer realm="jobtrail"'),)
            )
            return
        limiter: Callable[[str], int | None] | None = deps.rate_limit
        wait = limiter(principal.key_id) if limiter is not None else None
        if wait is not None:
            await send_problem(send, 429, _RATE_LIMITED, ((b"retry-after", str(wait).encode()),))
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def refresh_keys(keys: KeyRing, refresh: Callable[[], Any], every_s: float) -> None:
    """Keeps the key ring current until cancelled; a failed refresh keeps the keys it had (the
    database away must not lock every client out) and is logged once per failure streak."""
    failing = False
    while True:
        await asyncio.sleep(every_s)
        try:
            await refresh()
            if failing:
                log.warning("API keys refreshed again (%d live keys)", len(keys))
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                log.warning("cannot refresh API keys (keeping the %d known): %r", len(keys), exc)
            failing = True
