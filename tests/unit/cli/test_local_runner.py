"""The local pod runner with real processes: init containers, then containers, readiness, failures, stop."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

from mlendpoints.local.mapping import PodObjects, plan_pod
from mlendpoints.local.runner import PodFailed, alive, start_pod, stop, wait_ready
from tests.fixtures.servers import free_port

# A tiny HTTP server standing in for a model server: serves the file the init container wrote.
SERVE = """
import argparse, http.server, pathlib
p = argparse.ArgumentParser()
p.add_argument('--port', type=int); p.add_argument('--host'); p.add_argument('--dir')
a = p.parse_args()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (pathlib.Path(a.dir) / 'model.txt').read_bytes()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.HTTPServer((a.host, a.port), H).serve_forever()
"""
FETCH = "import pathlib, sys; pathlib.Path(sys.argv[1], 'model.txt').write_text(sys.argv[2])"
FAIL = (
    "import os, sys; open(os.environ['MLENDPOINTS_TERMINATION_LOG'], 'w').write('fetch failed: not found');"
    " sys.exit(1)"
)


def pod(init_code: str = FETCH, serve_code: str = SERVE) -> dict:
    return {
        "volumes": [{"name": "model", "emptyDir": {}}],
        "initContainers": [
            {
                "name": "fetch",
                "command": [sys.executable, "-c", init_code, "/m", "hello-model"],
                "volumeMounts": [{"name": "model", "mountPath": "/m"}],
            }
        ],
        "containers": [
            {
                "name": "server",
                "command": [sys.executable, "-c", serve_code],
                "args": ["--port", "5001", "--host", "0.0.0.0", "--dir", "/m"],
                "ports": [{"containerPort": 5001}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 5001}},
                "volumeMounts": [{"name": "model", "mountPath": "/m"}],
            }
        ],
    }


def test_init_then_container_ready_and_stopped(tmp_path: Path) -> None:
    plan = plan_pod("p-0", pod(), tmp_path, PodObjects(), allocate_port=free_port)
    procs = start_pod(plan)
    try:
        wait_ready(procs, timeout=30)
        port = procs[0].ports[5001]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.read() == b"hello-model"
    finally:
        stop(procs)
    assert not alive(procs[0].pid)


def test_failing_init_container_reports_its_termination_message(tmp_path: Path) -> None:
    plan = plan_pod("p-0", pod(init_code=FAIL), tmp_path, PodObjects(), allocate_port=free_port)
    with pytest.raises(PodFailed, match="init container fetch failed: fetch failed: not found"):
        start_pod(plan)


def test_container_that_exits_fails_readiness_with_its_last_log_line(tmp_path: Path) -> None:
    crash = "import sys; print('model load failed: No module named xgboost', flush=True); sys.exit(3)"
    plan = plan_pod("p-0", pod(serve_code=crash), tmp_path, PodObjects(), allocate_port=free_port)
    procs = start_pod(plan)
    try:
        with pytest.raises(
            PodFailed, match="container server exited: model load failed: No module named xgboost"
        ):
            wait_ready(procs, timeout=30)
    finally:
        stop(procs)
