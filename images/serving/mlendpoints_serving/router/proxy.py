"""The downstream HTTP/1.1 transport: requests parsed with httptools on uvloop, handed to the Router.

Requests on one connection are answered in order (pipelined ones wait their turn).
The body limit is enforced while reading: a Content-Length over it is refused
before the body arrives, and a chunked body is cut off once it passes the limit.
A request that has begun must be read whole within the read timeout (408 otherwise),
so that slow senders (slowloris) cannot hold connections open.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable
from typing import Protocol

import httptools

from mlendpoints_serving.contract import (
    HEADER_DEPLOYMENT,
    HEADER_DEPLOYMENT_AZURE,
    HEADER_REQUEST_ID,
    ROUTER_SCALING_PATH,
)
from mlendpoints_serving.router.service import Request, Response, Router, error_response
from mlendpoints_serving.router.upstream import HOP_BY_HOP, Headers

log = logging.getLogger("mlendpoints.router")

_PIN_HEADERS = frozenset({HEADER_DEPLOYMENT.encode(), HEADER_DEPLOYMENT_AZURE.encode()})
_REQUEST_ID = HEADER_REQUEST_ID.encode()
_MAX_PIPELINED = 32
_LINGER_S = 2.0
_KEEP_ALIVE_S = 75.0  # an idle client connection is closed after this (nginx's default)


def serialize(response: Response, keep_alive: bool, head: bool) -> bytes:
    parts = [b"HTTP/1.1 ", str(response.status).encode(), b" ", response.reason, b"\r\n"]
    for name, value in response.headers:
        parts += (name, b": ", value, b"\r\n")
    body = b"" if head else response.body
    if not (head and any(name.lower() == b"content-length" for name, _ in response.headers)):
        parts += (b"content-length: ", str(len(response.body)).encode(), b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


class Handler(Protocol):
    async def handle(self, request: Request) -> Response: ...


ADMIN_PATHS = (b"/health", b"/metrics", ROUTER_SCALING_PATH.encode())


class AdminHandler:
    """The plain admin port: the router's own paths only (probes, Prometheus, the operator's scaler),
    never scoring, so that a TLS endpoint's requests cannot bypass TLS through it."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def handle(self, request: Request) -> Response:
        if request.method == b"GET" and request.target in ADMIN_PATHS:
            return await self._router.handle(request)
        message = "the admin port serves only GET /health, /metrics and /-/scaling"
        return error_response(404, "not_found", message)


class DownstreamProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, router: Handler, max_body_bytes: Callable[[], int], read_timeout_s: float) -> None:
        self._router = router
        self._max_body_bytes = max_body_bytes
        self._read_timeout_s = read_timeout_s
        # Armed only when a request did not arrive whole in one read: most never need it.
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading = False  # a request has begun and is not complete
        self._transport: asyncio.Transport | None = None
        # Cached: each asyncio.get_running_loop() is a getpid() system call on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._pending: collections.deque[Request] = collections.deque()
        self._current: Request | None = None
        self._paused = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # the request being answered; the reference keeps it
        self._rejected = False  # the connection was refused (bad request, body too large): ignore the rest
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._request_id: bytes | None = None
        self._authorization: bytes | None = None
        self._pin: bytes | None = None
        self._expect_continue = False
        self._declared_length = 0

    # --- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._pending.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._read_timer is not None:
            self._read_timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return  # lingering after a refusal: read and discard until the client closes
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(error_response(501, "upgrade_not_supported", "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if not self._rejected:
                self._refuse(error_response(400, "bad_request", f"malformed HTTP request: {exc}"))
        if self._reading and self._read_timer is None and not self._rejected:
            self._read_timer = self._loop.call_later(self._read_timeout_s, self._read_timed_out)

    # --- httptools callbacks -------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()
        self._reading = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"authorization":
            self._authorization = value
        elif lowered == _REQUEST_ID:
            self._request_id = value or None
        elif lowered in _PIN_HEADERS:
            self._pin = value
        elif lowered == b"content-length":
            self._declared_length = int(value) if value.isdigit() else 0
        elif lowered == b"expect":
            self._expect_continue = value.lower() == b"100-continue"
        elif lowered not in HOP_BY_HOP:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        limit = self._max_body_bytes()
        if self._declared_length > limit:
            self._reject_body(limit)
        elif self._expect_continue and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._rejected:
            return
        self._body_size += len(body)
        limit = self._max_body_bytes()
        if self._body_size > limit:
            self._reject_body(limit)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._reading = False
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self._rejected:
            return
        request = Request(
            self._parser.get_method(),
            self._url,
            self._headers,
            b"".join(self._body),
            self._request_id,
            self._authorization,
            self._pin,
            self._parser.should_keep_alive(),
        )
        if self._current is None:
            self._start(request)
        else:
            self._pending.append(request)
            if len(self._pending) >= _MAX_PIPELINED and self._transport is not None:
                self._transport.pause_reading()
                self._paused = True

    # --- answering -------------------------------------------------------------
    def _start(self, request: Request) -> None:
        self._current = request
        self._task = self._loop.create_task(self._respond(request))

    async def _respond(self, request: Request) -> None:
        # The task writes its own answer: a done-callback would cost one more event-loop turn per request.
        try:
            response = await self._router.handle(request)
        except asyncio.CancelledError:
            response = error_response(503, "shutting_down", "the router is shutting down")
        except Exception as exc:
            log.error("request failed", exc_info=exc)
            response = error_response(500, "internal_error", f"router error: {exc}", request.request_id)
        self._current = None
        self._task = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(serialize(response, request.keep_alive, request.method == b"HEAD"))
        if not request.keep_alive:
            transport.close()
            return
        if self._pending:
            self._start(self._pending.popleft())
        else:
            self._arm_idle_timer()
        if self._paused and len(self._pending) < _MAX_PIPELINED:
            self._paused = False
            transport.resume_reading()

    def _arm_idle_timer(self) -> None:
        self._idle_timer = self._loop.call_later(_KEEP_ALIVE_S, self._close_idle)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self._reading and not self._rejected:
            message = f"the request was not received whole within {self._read_timeout_s:g} s"
            self._refuse(error_response(408, "request_timeout", message))

    def _close_idle(self) -> None:
        if self._current is None and self._transport is not None:
            self._transport.close()

    def _reject_body(self, limit: int) -> None:
        size = max(self._declared_length, self._body_size)
        message = f"request body of {size} bytes is over the limit of {limit} bytes (maxBodyBytes)"
        self._refuse(error_response(413, "payload_too_large", message))

    def _refuse(self, response: Response) -> None:
        """Answer at once and stop reading requests. Closing while the client is still sending
        would reset the connection and lose the answer, so shut down our side and linger briefly."""
        self._rejected = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(serialize(response, keep_alive=False, head=False))
        if transport.can_write_eof():
            transport.write_eof()
            self._loop.call_later(_LINGER_S, transport.close)
        else:
            transport.close()


async def serve(
    router: Handler,
    host: str,
    port: int,
    max_body_bytes: Callable[[], int],
    read_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: DownstreamProtocol(router, max_body_bytes, read_timeout_s),
        host,
        port,
        backlog=4096,
        reuse_address=True,
        ssl=ssl_context,
        # A client that connects and never completes the handshake is dropped like a slow request.
        ssl_handshake_timeout=read_timeout_s if ssl_context is not None else None,
    )
