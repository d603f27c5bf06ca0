"""bench/gpu_load.py (the device check's load generator) against a real HTTP server on loopback, and how
the check reads a column model's records."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bench.gpu_check import as_array
from bench.gpu_load import run


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        body = self.rfile.read(length)
        status = 200 if b"ok" in body else 507
        reply = b'{"error": {"code": "device_out_of_memory"}}' if status != 200 else b"[[1.0, 2.0]]"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/score"
    server.shutdown()


def test_the_load_generator_counts_answers_rows_and_statuses(url: str) -> None:
    result = run(url, b'{"ok": 1}', connections=4, seconds=0.5, processes=2, rows=1000)
    assert result.requests > 0 and result.errors == 0 and result.statuses == {"200": result.requests}
    assert result.rows_per_s == pytest.approx(result.rps * 1000, rel=1e-3)
    assert 0 < result.p50_ms <= result.p99_ms
    failing = run(url, b'{"no": 1}', connections=2, seconds=0.3, processes=1)
    assert failing.errors == failing.requests > 0 and failing.rps == 0 and set(failing.statuses) == {"507"}


def test_a_column_model_s_records_read_as_rows() -> None:
    records = [{"0": 1.0, "1": 2.0, "2": 3.0}, {"0": 4.0, "1": 5.0, "2": 6.0}]
    np.testing.assert_array_equal(as_array(records), np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    np.testing.assert_array_equal(as_array([[1.0, 2.0]]), np.array([[1.0, 2.0]], dtype=np.float32))
