"""`mlflow deployments run-local -t mlendpoints`: the plugin's run_local, backed by `mlendpoints local up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mlendpoints.local.runner import alive
from tests.fixtures.servers import free_port, wait_http

pytestmark = pytest.mark.slow
MLFLOW = str(Path(sys.executable).parent / "mlflow")


def test_run_local_serves_until_stopped(tmp_path: Path, diabetes_model: Path) -> None:
    home, port = tmp_path / "home", free_port()
    env = {**os.environ, "MLENDPOINTS_LOCAL_HOME": str(home)}
    argv = [MLFLOW, "deployments", "run-local", "-t", "mlendpoints", "--name", "quick",
            "-m", str(diabetes_model), "-C", f"port={port}", "-C", "workers=1"]  # fmt: skip
    log = tmp_path / "run-local.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)  # type: ignore[arg-type]
        # The router answers /health before `local up` has seen every instance ready and said so.
        deadline = time.monotonic() + 60
        while "endpoint quick is ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        state = json.loads((home / "endpoints" / "quick" / "state.json").read_text())
        body = {"input_data": {"columns": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"],
                               "data": [[0.01] * 10]}}  # fmt: skip
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/score",
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {state['keys']['primaryKey']}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["x-mlendpoints-served-by"] == "quick"
            assert isinstance(json.loads(resp.read())[0], float)
        pids = [p["pid"] for p in state["router"]] + [
            p["pid"] for pod in state["deployments"]["quick"]["instances"] for p in pod
        ]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=60)
    assert not any(alive(pid) for pid in pids), log.read_text()
    assert not (home / "endpoints" / "quick").exists()
    assert "endpoint quick is ready" in log.read_text()
