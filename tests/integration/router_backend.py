"""A real HTTP backend for router tests: `python -m tests.integration.router_backend NAME PORT [DELAY HOST]`.

Answers every request with JSON describing what it received (its name, method,
path, headers, body). Query parameters steer it: `delay=SECONDS` waits first,
`status=N` answers with that status; an optional third argument is a delay applied
to every request (a slow mirror). `GET /__count` returns how many requests it has
answered (mirror tests count copies with it).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't wait for an ACK between
    server: Backend

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, head: bool = False) -> None:
        url = urlsplit(self.path)
        if url.path == "/__count":
            self._send(200, {"count": self.server.count})
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        query = parse_qs(url.query)
        delay = float(query["delay"][0]) if "delay" in query else self.server.delay
        if delay:
            time.sleep(delay)
        with self.server.lock:
            self.server.count += 1
        status = int(query.get("status", ["200"])[0])
        self._send(
            status,
            {
                "backend": self.server.name,
                "method": self.command,
                "path": url.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(errors="replace"),
            },
            head,
        )

    def _send(self, status: int, payload: dict[str, object], head: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-backend", self.server.name)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def do_HEAD(self) -> None:
        self._answer(head=True)


class Backend(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, name: str, port: int, delay: float = 0.0, host: str = "127.0.0.1") -> None:
        super().__init__((host, port), Handler)
        self.name = name
        self.delay = delay
        self.count = 0
        self.lock = threading.Lock()


if __name__ == "__main__":
    name, port, *rest = sys.argv[1:]
    delay, host = float(rest[0]) if rest else 0.0, rest[1] if len(rest) > 1 else "127.0.0.1"
    Backend(name, int(port), delay, host).serve_forever()
