"""HTTP/1.1 to the pods: a keep-alive connection pool per address, responses parsed with httptools.

One request at a time per connection (no pipelining). A connection goes back to
its address's idle list after a complete keep-alive response and is dropped when
the pod closes it. Responses are read whole (inference answers are bounded).
"""

from __future__ import annotations

import asyncio

import httptools

# Never forwarded in either direction: they describe one hop, not the message.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
# Set by the router on every response; a copy from the pod would duplicate them.
ROUTER_RESPONSE_HEADERS = frozenset({b"x-request-id", b"x-mlendpoints-served-by", b"x-mlendpoints-rerouted"})
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | ROUTER_RESPONSE_HEADERS

Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """No response from the pod. `retryable`: the request surely did not reach it."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConnectFailed(UpstreamError):
    """The pod refused (or did not accept) the connection: nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class UpstreamTimeout(TimeoutError):
    """The pod did not answer before the request's deadline."""


def _expire(waiter: asyncio.Future[UpstreamResponse]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout())


class UpstreamResponse:
    __slots__ = ("body", "headers", "keep_alive", "reason", "status")

    def __init__(self, status: int, reason: bytes, headers: Headers, body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a pod, reused across requests."""

    __slots__ = (
        "_body",
        "_framed",
        "_head_request",
        "_headers",
        "_headers_done",
        "_parser",
        "_reason",
        "_received",
        "_waiter",
        "address",
        "closed",
        "loop",
        "reused",
        "transport",
    )

    def __init__(self, address: tuple[str, int], loop: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._received = False
        self._head_request = False
        self._headers_done = False
        self._framed = False
        self._reason = b""
        self._headers: Headers = []
        self._body: list[bytes] = []

    # --- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"invalid response from {self._where()}: {exc}", retryable=False))
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed:
            # Neither Content-Length nor chunked: the body ends when the pod closes.
            self._complete(keep_alive=False)
            return
        # Nothing came back on a reused connection: the pod closed it while idle, so the
        # request never reached an application; safe to send again elsewhere.
        retryable = self.reused and not self._received
        reason = "reset" if exc else "closed"
        self._fail(UpstreamError(f"connection to {self._where()} {reason} before a response", retryable))

    # --- httptools callbacks -------------------------------------------------
    def on_message_begin(self) -> None:
        self._reason = b""
        self._headers = []
        self._body = []
        self._headers_done = False
        self._framed = False

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered not in DROPPED_RESPONSE_HEADERS:
            self._headers.append((name, value))
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True
            if self._head_request and lowered == b"content-length":
                self._headers.append((name, value))  # a HEAD answer carries the length a GET would have

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head_request:
            # httptools cannot be told the response to HEAD has no body: finish here, don't reuse.
            self._complete(keep_alive=False)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._head_request:
            self._complete(keep_alive=self._parser.should_keep_alive())

    # --- use -------------------------------------------------------------------
    def send(self, data: bytes, head_request: bool = False) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self._waiter = self.loop.create_future()
        self._received = False
        self._head_request = head_request
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete(self, keep_alive: bool) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            body = b"".join(self._body)
            status = self._parser.get_status_code()
            waiter.set_result(UpstreamResponse(status, self._reason, self._headers, body, keep_alive))

    def _fail(self, error: UpstreamError) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


class UpstreamPool:
    """Idle keep-alive connections per pod address (most recently used first)."""

    def __init__(self, max_idle_per_address: int = 512, connect_timeout_s: float = 5.0) -> None:
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._max_idle = max_idle_per_address
        self._connect_timeout_s = connect_timeout_s

    async def acquire(self, address: tuple[str, int], deadline: float | None = None) -> UpstreamConnection:
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        loop = asyncio.get_running_loop()
        timeout = self._connect_timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - loop.time())
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: UpstreamConnection(address, loop), *address)
        except (OSError, TimeoutError) as exc:
            if deadline is not None and loop.time() >= deadline:
                raise UpstreamTimeout() from exc
            raise ConnectFailed(f"cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn.closed:
            return
        idle = self._idle.setdefault(conn.address, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def exchange(
        self, address: tuple[str, int], data: bytes, head_request: bool = False, deadline: float | None = None
    ) -> UpstreamResponse:
        """Send one request and read its response; the connection goes back to the pool when reusable.

        Past `deadline` (loop time) it raises UpstreamTimeout. One timer on the response's future,
        not asyncio.timeout: that costs a tenth of the router's time per request.
        """
        conn = await self.acquire(address, deadline)
        try:
            waiter = conn.send(data, head_request)
            timer = None if deadline is None else conn.loop.call_at(deadline, _expire, waiter)
            try:
                response = await waiter
            finally:
                if timer is not None:
                    timer.cancel()
        except BaseException:
            conn.close()  # a timed-out or failed exchange leaves the connection in an unknown state
            raise
        if response.keep_alive:
            self.release(conn)
        else:
            conn.close()
        return response

    def prune(self, keep: set[tuple[str, int]]) -> None:
        """Close idle connections to addresses no longer in use."""
        for address in [a for a in self._idle if a not in keep]:
            for conn in self._idle.pop(address):
                conn.close()

    def close(self) -> None:
        self.prune(set())
