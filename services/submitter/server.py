"""Bounds of the request head: an oversized one answers 414 or 431, not a reset.

The submitter serves HTTP with uvicorn's httptools (llhttp) protocol, a C parser at a fraction
of h11's CPU per request (docs/performance.md). llhttp bounds nothing: it would buffer a header of
any size. ``BoundedHttpToolsProtocol`` bounds the request line and header fields together
(``max_head_bytes``, h11's default of 16 KiB, handed to uvicorn as h11's largest incomplete
event) while a head is incomplete. Past it, stock uvicorn (h11) wrote a plain-text 400 and closed
at once; the client is usually still sending its head, so the kernel answers the unread bytes
with a reset and the client sees "connection reset" instead of any status. This protocol instead
names the problem (414 URI Too Long when the request line alone does not fit, else 431 Request
Header Fields Too Large, RFC 9110 15.5.15 and RFC 6585 5) in a problem document, then
half-closes and reads and discards what the client still sends (a lingering close, bounded in
time and bytes) so that the answer reaches the client before the connection goes. A request
llhttp cannot parse answers 400 the same way.

The check applies while a head is incomplete: a 40 KB head that arrives in one read is parsed
whole. ``HeadLimit`` (an ASGI middleware) applies the same bound to every parsed head, so the
limit holds however the bytes arrive.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 16_384
"""The default bound of the request line and header fields together (h11's own default): far
more than any request of this API needs (ids, an idempotency key, a time, a request id), and
little for a connection to make the server hold (JOBTRAIL_SUBMITTER_MAX_HEAD_BYTES)."""

LINGER_S = 5.0
LINGER_BYTES = 16 * 1_048_576
"""How long, and how much of a refused head, is read and discarded before the server closes:
enough for a client to finish sending any head it meant to send and read the answer."""


def head_too_large(line_fits: bool, limit: int) -> tuple[int, str, str]:
    """The status, title and detail for a request head over ``limit`` bytes: 414 when the
    request line alone does not fit, else 431."""
    if not line_fits:
        return 414, "URI Too Long", f"the request line is over {limit} bytes (the URL is too long)"
    return (
        431,
        "Request Header Fields Too Large",
        f"the request line and header fields are over {limit} bytes together",
    )


def problem_body(status: int, title: str, detail: str) -> bytes:
    """An RFC 9457 problem document as bytes."""
    return json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()


async def send_problem(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answers an ASGI request with a problem document (``body``) and ``headers``, from a
    middleware, before the application sees the request."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def problem_response(status: int, title: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response carrying an RFC 9457 problem document; closes."""
    body = problem_body(status, title, detail)
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def refuse(
    transport: asyncio.Transport,
    loop: asyncio.AbstractEventLoop,
    logger: logging.Logger,
    status: int,
    title: str,
    detail: str,
) -> None:
    """Answers a refused head with a problem document, then half-closes and lets the client
    finish sending (the caller discards what arrives) for at most LINGER_S before closing."""
    logger.warning("answering %d: %s", status, detail)
    transport.write(problem_response(status, title, detail))
    if transport.can_write_eof():
        transport.write_eof()  # the client reads the answer, then closes its side
    loop.call_later(LINGER_S, transport.close)


MALFORMED = (
    400,
    "Bad Request",
    "the request is not valid HTTP/1.1 (a malformed request line or header)",
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol answering 414 or 431 when a head is still incomplete past
    the bound, 400 when llhttp cannot parse it, each a problem document with a lingering close.

    The bytes received since a request began are counted while its head is incomplete; past the
    bound the request is refused, so no more than the bound and one read are ever held."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit = self.config.h11_max_incomplete_event_size or MAX_HEAD_BYTES
        self._in_head = True  # between the start of a request and the end of its head
        self._head_bytes = 0  # bytes received since the request began, while in its head
        self._url_bytes = 0
        self._draining = -1  # bytes discarded since refusing a head; -1 while not refusing

    def data_received(self, data: bytes) -> None:
        if self._draining >= 0:  # the answer is sent: discard the rest of the refused head
            self._draining += len(data)
            if self._draining > LINGER_BYTES:
                self.transport.close()
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._draining < 0 and self._head_bytes > self._limit:
            line_fits = self._url_bytes + len("OPTIONS  HTTP/1.1\r\n") <= self._limit
            self._refuse(*head_too_large(line_fits, self._limit))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._url_bytes += len(url)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn when llhttp cannot parse the request."""
        if self._draining < 0:
            self._refuse(*MALFORMED)

    def _refuse(self, status: int, title: str, detail: str) -> None:
        self._draining = 0  # nothing more is parsed: data_received discards it
        refuse(self.transport, self.loop, self.logger, status, title, detail)


class HeadLimit:
    """Refuses a parsed request whose line (414) or line and header fields together (431) are
    over ``max_bytes``, counted as they were on the wire."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_HEAD_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target = len(path) + (len(query) + 1 if query else 0)
        line = len(scope["method"]) + 1 + target + len(" HTTP/1.1\r\n")
        fields = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if line + fields + 2 <= self.max_bytes:
            await self.app(scope, receive, send)
            return
        status, title, detail = head_too_large(line <= self.max_bytes, self.max_bytes)
        body = problem_body(status, title, detail)
        await send_problem(send, status, body, ((b"connection", b"close"),))
