"""The model server's HTTP/1.1 protocol (server/http1.py) on a real uvicorn server on loopback.

The app behind it is a small echo app written for these tests (the protocol is what is
under test; the model server's own routes run over it in tests/integration/test_server.py).
Requests are written on raw sockets, so the bytes on the wire are what is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from mlendpoints_serving.server.http1 import BodyTooLarge, Http1Protocol, checked, serialize
from tests.fixtures.servers import free_port

LIMIT = 1000


class EchoApp:
    """Answers what it got: method, path, query, body and headers; /slow?S waits S seconds first."""

    max_body_bytes = LIMIT

    def __init__(self) -> None:
        self.answered = 0

    async def handle(
        self, scope: dict[str, Any], body: bytes | BodyTooLarge
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if isinstance(body, BodyTooLarge):
            payload = b'{"error": "too large"}'
            return (
                413,
                [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))],
                payload,
            )
        if scope["path"] == "/slow":
            await asyncio.sleep(float(scope["query_string"] or b"0.3"))
        if scope["path"] == "/boom":
            raise RuntimeError("a bug in the app")
        self.answered += 1
        payload = json.dumps(
            {
                "method": scope["method"],
                "path": scope["path"],
                "query": scope["query_string"].decode(),
                "body": body.decode(),
                "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
                "version": scope["http_version"],
            }
        ).encode()
        return (
            200,
            [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))],
            payload,
        )


class Running:
    def __init__(self, server: uvicorn.Server, port: int, app: EchoApp) -> None:
        self.server, self.port, self.app = server, port, app

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock


@contextlib.contextmanager
def running(keep_alive_s: int = 75) -> Iterator[Running]:
    app = EchoApp()
    port = free_port()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=Http1Protocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_keep_alive=keep_alive_s,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield Running(server, port, app)
    finally:
        server.should_exit = True
        thread.join(10)


class Reader:
    """Reads HTTP/1.1 responses off a socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed before a response: {self.buffer!r}"
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, value = line.split(": ", 1)
            headers[name.lower()] = value
        length = 0 if head or status == 100 else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._fill(), "connection closed inside a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self) -> bool:
        """The peer closed the connection (nothing more is sent)."""
        self.sock.settimeout(3)
        return not self._fill() and not self.buffer


def request(method: str, path: str, body: bytes = b"", *headers: str, version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with running() as srv:
        yield srv


def test_keep_alive_answers_requests_one_after_another_on_one_connection(server: Running) -> None:
    with server.connect() as sock:
        reader = Reader(sock)
        for n in range(3):
            sock.sendall(
                request("POST", "/score", f'{{"n": {n}}}'.encode(), "Content-Type: application/json")
            )
            status, headers, body = reader.response()
            assert status == 200
            assert "connection" not in headers
            echoed = json.loads(body)
            assert echoed["body"] == f'{{"n": {n}}}'
            assert ["content-type", "application/json"] in echoed["headers"]


def test_path_is_decoded_and_query_kept(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(request("GET", "/v2/models/my%20model?version=2&x=%20"))
        status, _, body = Reader(sock).response()
    assert status == 200
    echoed = json.loads(body)
    assert echoed["path"] == "/v2/models/my model"
    assert echoed["query"] == "version=2&x=%20"


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slow(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(request("GET", "/slow?0.3") + request("POST", "/a", b"1") + request("POST", "/b", b"2"))
        reader = Reader(sock)
        paths = [json.loads(reader.response()[2])["path"] for _ in range(3)]
    assert paths == ["/slow", "/a", "/b"]


def test_a_body_in_several_packets_arrives_whole(server: Running) -> None:
    body = b"x" * 900
    data = request("POST", "/score", body)
    with server.connect() as sock:
        for start in range(0, len(data), 100):
            sock.sendall(data[start : start + 100])
            time.sleep(0.005)
        status, _, answer = Reader(sock).response()
    assert status == 200
    assert json.loads(answer)["body"] == body.decode()


def test_a_chunked_body_is_joined(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        status, _, answer = Reader(sock).response()
    assert status == 200
    assert json.loads(answer)["body"] == "hello world"


def test_a_body_over_the_limit_by_its_length_is_refused_before_it_is_sent(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(
            f"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: {LIMIT + 1}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 413  # not 100 Continue: the client need not send the body
        assert headers["connection"] == "close"
        assert body == b'{"error": "too large"}'
        assert reader.closed()


def test_a_chunked_body_over_the_limit_is_refused_and_the_connection_closed(server: Running) -> None:
    chunk = b"y" * 600
    with server.connect() as sock:
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2
        )
        reader = Reader(sock)
        status, headers, _ = reader.response()
        assert status == 413
        assert headers["connection"] == "close"
        assert reader.closed()


def test_expect_100_continue_gets_continue_then_the_answer(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        status, _, _ = reader.response()
        assert status == 100
        sock.sendall(b"{}")
        status, _, body = reader.response()
    assert status == 200
    assert json.loads(body)["body"] == "{}"


def test_head_gets_the_headers_without_the_body(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(request("HEAD", "/health") + request("GET", "/next"))
        reader = Reader(sock)
        status, headers, body = reader.response(head=True)
        assert status == 200 and int(headers["content-length"]) > 0 and body == b""
        # The next answer starts right after the headers: no body bytes were sent for HEAD.
        assert json.loads(reader.response()[2])["path"] == "/next"


def test_http_1_0_is_answered_and_closed(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(request("GET", "/old", version="1.0"))
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert json.loads(body)["version"] == "1.0"
        assert reader.closed()


def test_connection_close_is_honoured(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(request("GET", "/bye", b"", "Connection: close"))
        reader = Reader(sock)
        assert reader.response()[1]["connection"] == "close"
        assert reader.closed()


def test_a_request_the_parser_refuses_gets_400_and_close(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(b"NOT A REQUEST\r\n\r\n")
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 400 and headers["connection"] == "close"
        assert b"Invalid HTTP request" in body
        assert reader.closed()


def test_an_upgrade_is_answered_as_plain_http_and_closed(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(request("GET", "/ws", b"", "Connection: Upgrade", "Upgrade: websocket"))
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert json.loads(body)["path"] == "/ws"
        assert reader.closed()


def test_an_exception_in_the_app_is_a_500_and_close(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(request("GET", "/boom"))
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 500 and headers["connection"] == "close"
        assert body == b"Internal Server Error"
        assert reader.closed()


def test_a_client_gone_mid_request_does_not_break_the_server(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(request("GET", "/slow?0.2"))
    time.sleep(0.4)  # answered into a closed connection
    with server.connect() as sock:
        sock.sendall(request("GET", "/after"))
        assert Reader(sock).response()[0] == 200


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    with running(keep_alive_s=1) as srv, srv.connect() as sock:
        sock.sendall(request("GET", "/once"))
        reader = Reader(sock)
        assert reader.response()[0] == 200
        started = time.monotonic()
        assert reader.closed()
        assert 0.5 < time.monotonic() - started < 2.9


def test_a_busy_connection_is_not_closed_by_the_keep_alive_timeout() -> None:
    with running(keep_alive_s=1) as srv, srv.connect() as sock:
        sock.sendall(request("GET", "/slow?1.5"))
        assert Reader(sock).response()[0] == 200


def test_shutdown_answers_the_request_in_flight_then_closes() -> None:
    with running() as srv, srv.connect() as sock:
        sock.sendall(request("GET", "/slow?0.5"))
        time.sleep(0.1)
        srv.server.should_exit = True  # as on SIGTERM
        reader = Reader(sock)
        status, headers, _ = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert reader.closed()


def test_shutdown_answers_pipelined_requests_already_read() -> None:
    with running() as srv, srv.connect() as sock:
        sock.sendall(request("GET", "/slow?0.5") + request("GET", "/second"))
        time.sleep(0.1)
        srv.server.should_exit = True
        reader = Reader(sock)
        first, second = reader.response(), reader.response()
        assert first[0] == 200 and "connection" not in first[1]
        assert second[0] == 200 and second[1]["connection"] == "close"
        assert json.loads(second[2])["path"] == "/second"
        assert reader.closed()


def test_serialize_writes_status_headers_and_body() -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    assert serialize(201, headers, b"{}", keep_alive=True, head=False) == (
        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    )
    assert (
        serialize(599, [], b"", keep_alive=False, head=True) == b"HTTP/1.1 599 \r\nconnection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"x-ok", b"a\r\nset-cookie: evil"), (b"x ok", b"v"), (b"x:ok", b"v"), (b"x-ok", b"a\nb")],
)
def test_headers_that_would_split_a_response_are_refused(name: bytes, value: bytes) -> None:
    with pytest.raises(ValueError, match="invalid response header"):
        checked([(name, value)])
    assert checked([(b"x-ok", b"any visible text\tand tabs")])


def test_the_app_answers_the_same_over_asgi(tmp_path: Any) -> None:
    """ServerApp stays an ASGI app over the same core: any ASGI server can run it."""
    from pathlib import Path

    from mlendpoints_serving.server.app import ServerApp
    from mlendpoints_serving.server.metrics import Metrics
    from mlendpoints_serving.server.settings import ServeSettings

    settings = ServeSettings(model_dir=Path(tmp_path), workers=1, max_body_bytes=10)  # type: ignore[call-arg]
    app = ServerApp(settings, Metrics(), on_load_failed=lambda reason: None)

    async def call(method: str, path: str, chunks: list[bytes]) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[dict[str, Any]] = []
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": []}
        await app(scope, receive, send)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]

    status, headers, body = asyncio.run(call("GET", "/health", [b""]))
    assert status == 503 and json.loads(body)["error"]["code"] == "not_ready"
    assert headers[b"content-length"] == str(len(body)).encode()
    status, _, body = asyncio.run(call("POST", "/invocations", [b"123456", b"789012"]))  # 12 bytes > 10
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    status, headers, _ = asyncio.run(call("DELETE", "/invocations", [b""]))
    assert status == 405 and headers[b"allow"] == b"POST"
