"""HTTP/1.1 over httptools, straight to the app's core: no ASGI messages on the request path.

uvicorn still runs the process (sockets, lifespan, signals, graceful shutdown); this protocol
replaces its per-request machinery. Under uvicorn's own httptools protocol every request
builds a RequestResponseCycle with an asyncio.Event, copies the lifespan state, goes
through `receive()` and two `send()` messages and a regex per response header: for a small
prediction that was most of the server's time (uvicorn's `send` alone was 24% of py-spy's
samples). Here a request is parsed into a small scope, handed to `ServerApp.handle` as one
coroutine, and its answer written with one `transport.write`.

What it keeps of HTTP/1.1: keep-alive (HTTP/1.0 only when asked), pipelined requests
answered in order (reading pauses while they queue), `Expect: 100-continue`, HEAD without
a body, the body limit (413 and close, before the body when Content-Length says so),
400 and close on a request the parser refuses, write back-pressure, the keep-alive
timeout, and uvicorn's graceful shutdown (finish what is in flight, then close).
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

log = logging.getLogger("mlendpoints.serve")

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]


class BodyTooLarge(Exception):
    """The request's body is over the app's limit; the app answers it (413)."""


class Core(Protocol):
    """What this transport needs of the app (ServerApp)."""

    max_body_bytes: int

    async def handle(self, scope: Scope, body: bytes | BodyTooLarge) -> tuple[int, Headers, bytes]: ...


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The app writes its own headers, but a scoring script's AMLResponse names some: no response splitting.
_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


def serialize(status: int, headers: Headers, body: bytes, *, keep_alive: bool, head: bool) -> bytes:
    """One response as bytes: status line, headers, and the body unless the request was HEAD."""
    parts = [STATUS_LINES.get(status) or _status_line(status)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head:
        parts.append(body)
    return b"".join(parts)


def checked(headers: Headers) -> Headers:
    """`headers`, refused (ValueError) when a name or value could split the response."""
    for name, value in headers:
        if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid response header {name!r}: {value!r}")
    return headers


class _Request:
    """One parsed request waiting for, or getting, its answer."""

    __slots__ = ("body", "keep_alive", "scope")

    def __init__(self, scope: Scope, body: bytes | BodyTooLarge, keep_alive: bool) -> None:
        self.scope = scope
        self.body = body
        self.keep_alive = keep_alive


class Http1Protocol(asyncio.Protocol):
    """uvicorn's `http` protocol slot (`uvicorn.Config(http=Http1Protocol)`) for a `Core` app."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = cast(Core, config.app)  # the app itself: uvicorn's wrappers are ASGI's
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.keep_alive_s = float(config.timeout_keep_alive)
        self.limit = self.app.max_body_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # answer what came before
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.queue: deque[_Request] = deque()  # parsed, waiting for the one in flight
        self.busy = False  # a request of this connection is being answered
        self.closing = False  # answer what was read, then close (shutdown, an error, Connection: close)
        self.discarding = False  # the rest of this request is not read (413)
        self.reading_paused = False
        self.writable: asyncio.Event | None = None  # set while the transport takes writes
        self.last_active = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        # Per request, while it is parsed.
        self.url = b""
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.scope: Scope = {}
        self.expect_continue = False

    # -- connection -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but is one
        server = transport.get_extra_info("sockname")
        client = transport.get_extra_info("peername")
        self.server = tuple(server[:2]) if isinstance(server, tuple) else None  # type: ignore[assignment]
        self.client = tuple(client[:2]) if isinstance(client, tuple) else None  # type: ignore[assignment]
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        self.last_active = self.loop.time()
        # One timer per connection, re-armed only when it fires early: not one per request.
        self.idle_timer = self.loop.call_later(self.keep_alive_s, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)  # type: ignore[arg-type]
        self.closing = True
        self.queue.clear()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.writable is not None:
            self.writable.set()  # a writer waiting for the drain goes on, and finds the transport closed

    def eof_received(self) -> bool | None:
        return None  # close once the peer has closed its side

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol to upgrade to: the request (already taken) is answered, then the connection closes.
            self.closing = True
        except httptools.HttpParserError as exc:
            log.warning("invalid HTTP request: %s", exc)
            self.closing = True
            if not self.busy:
                self._write_and_close(_bad_request())

    def _write_and_close(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.Event()
        self.writable.clear()

    def resume_writing(self) -> None:
        if self.writable is not None:
            self.writable.set()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: answer the requests already read, then close."""
        self.closing = True
        if not self.busy:
            self.transport.close()

    def _idle_check(self) -> None:
        idle = self.loop.time() - self.last_active
        if self.busy or idle < self.keep_alive_s:
            self.idle_timer = self.loop.call_later(max(self.keep_alive_s - idle, 0.1), self._idle_check)
        elif not self.transport.is_closing():
            self.transport.close()

    # -- parser callbacks -------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.chunks = []
        self.size = 0
        self.expect_continue = False
        self.discarding = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = httptools.parse_url(self.url)
        path = url.path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        version = parser.get_http_version()
        self.scope = {
            "type": "http",
            "http_version": version,
            "method": parser.get_method().decode("ascii"),
            "path": path,
            "raw_path": url.path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": self.headers,
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
        }
        length = _content_length(self.headers)
        if length is not None and length > self.limit:
            self._refuse_body()  # before the body comes (a client waiting for 100-continue gets it)
        elif self.expect_continue and not self.transport.is_closing():
            self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self.discarding:
            return
        self.size += len(body)
        if self.size > self.limit:
            self.chunks = []
            self._refuse_body()
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.discarding:
            return
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        keep_alive = self.parser.should_keep_alive() and self.scope["http_version"] != "1.0"
        self._take(_Request(self.scope, body, keep_alive))

    def _refuse_body(self) -> None:
        """A body over the limit: the request is answered 413 and the connection closed, unread."""
        self.discarding = True
        self._take(_Request(self.scope, BodyTooLarge(), keep_alive=False))
        self._pause_reading()

    # -- answering --------------------------------------------------------------------------------
    def _take(self, request: _Request) -> None:
        if self.busy:
            self.queue.append(request)
            self._pause_reading()  # pipelined: the next waits; the socket's buffer holds the rest
            return
        self._start(request)

    def _start(self, request: _Request) -> None:
        self.busy = True
        task = self.loop.create_task(self._answer(request))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _answer(self, request: _Request) -> None:
        keep_alive = request.keep_alive
        try:
            status, headers, body = await self.app.handle(request.scope, request.body)
            keep_alive = keep_alive and not (self.closing and not self.queue)  # the last one read closes
            data = serialize(
                status, headers, body, keep_alive=keep_alive, head=request.scope["method"] == "HEAD"
            )
        except Exception:
            log.exception("unhandled error answering %s", request.scope.get("path"))
            data, keep_alive = _INTERNAL_ERROR, False
        if self.writable is not None and not self.writable.is_set():
            await self.writable.wait()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        self.server_state.total_requests += 1
        self.last_active = self.loop.time()
        if not keep_alive:
            transport.close()
            return
        if self.queue:
            self._start(self.queue.popleft())
            return
        self.busy = False
        if self.closing:
            transport.close()
        elif self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def _pause_reading(self) -> None:
        if not self.reading_paused and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _bad_request() -> bytes:
    message = b"Invalid HTTP request received."
    return (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
    )
