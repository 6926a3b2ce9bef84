"""The dashboard's static files under ``/ui``: one page, one script, one style sheet, committed
in ``static/`` and served as they are (no build step, nothing from another host).

They hold no data and no secret, so they are served without a key (auth.py lets ``/ui`` through);
every figure the page shows comes from the ``/v1`` API with the key the operator types in
(docs/dashboard.md). Each answer carries strict headers: the page may load only its own script
and style (no inline script, no other origin), may not be framed, and is not cached.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

STATIC = Path(__file__).parent / "static"

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)

CONTENT = {name: (STATIC / name).read_bytes() for name in ASSETS}
"""Read once at import: a request never reads the disk on the event loop."""


def _asset(name: str) -> Response:
    return Response(CONTENT[name], media_type=ASSETS[name], headers=SECURITY_HEADERS)


@router.get("/ui")
async def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=308, headers=SECURITY_HEADERS)


@router.get("/ui/")
async def ui_page() -> Response:
    return _asset("index.html")


@router.get("/ui/app.js")
async def ui_script() -> Response:
    return _asset("app.js")


@router.get("/ui/app.css")
async def ui_style() -> Response:
    return _asset("app.css")
