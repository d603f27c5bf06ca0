"""The progress reporter against a real HTTP server standing in for the API server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlendpoints_serving.batch.report import ProgressReporter
from mlendpoints_serving.contract import BatchCounts, BatchStatus


class _ApiServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers["Authorization"],
                        "type": self.headers["Content-Type"],
                        "body": json.loads(body),
                    }
                )
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def api() -> Iterator[_ApiServer]:
    server = _ApiServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    (tmp_path / "namespace").write_text("ml\n")
    (tmp_path / "token").write_text("token-1\n")
    return tmp_path


def _status(done: int) -> BatchStatus:
    return BatchStatus(phase="Running", instance=2, miniBatches=BatchCounts(total=10, succeeded=done))


def test_reports_merge_patch_one_key_at_most_once_per_interval(api: _ApiServer, credentials: Path):
    reporter = ProgressReporter("nightly-progress", 2, 0.3, api_server=api.url, credentials=credentials)

    reporter.update(_status(1))
    reporter.update(_status(2))  # within the interval: held back
    assert len(api.requests) == 1
    due = reporter.due_in()
    assert due is not None and 0 < due <= 0.3
    reporter.flush()
    assert len(api.requests) == 1, "not due yet"
    time.sleep(due)
    (credentials / "token").write_text("token-2")  # a rotated token is read again
    reporter.flush()

    first, second = api.requests
    assert first["path"] == "/api/v1/namespaces/ml/configmaps/nightly-progress"
    assert first["type"] == "application/merge-patch+json" and first["auth"] == "Bearer token-1"
    assert json.loads(first["body"]["data"]["instance-2"])["miniBatches"]["succeeded"] == 1
    assert json.loads(second["body"]["data"]["instance-2"])["miniBatches"]["succeeded"] == 2
    assert second["auth"] == "Bearer token-2"
    assert reporter.due_in() is None, "nothing waits"
    reporter.update(_status(3), force=True)  # the final status is never held back
    assert len(api.requests) == 3


def test_a_failing_api_server_is_retried_later_and_never_raises(api: _ApiServer, credentials: Path):
    api.status = 403
    reporter = ProgressReporter("nightly-progress", 0, 0.05, api_server=api.url, credentials=credentials)
    reporter.update(_status(1))
    assert len(api.requests) == 1
    assert reporter.due_in() is not None, "kept for a retry"
    api.status = 200
    time.sleep(0.15)  # the pause doubled after the failure
    reporter.flush()
    assert len(api.requests) == 2 and reporter.due_in() is None


def test_outside_a_cluster_it_does_nothing(monkeypatch: pytest.MonkeyPatch, credentials: Path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    reporter = ProgressReporter("nightly-progress", 0, 1.0, credentials=credentials)
    assert not reporter.enabled
    reporter.update(_status(1), force=True)
    assert reporter.due_in() is None
