"""`local up` with `scaleSettings.type: concurrency` and `minInstances: 0`: the endpoint's scaler
process takes the deployment to zero processes once idle, and a request at zero is held by the
router while the scaler starts an instance, then answered. Real CLI, router, servers, on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlendpoints.local.runner import STOP_GRACE_S, alive
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "mlendpoints")
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]

YAML = """\
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineEndpoint
metadata: {{name: lazy}}
spec:
  traffic: {{blue: 100}}
---
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineDeployment
metadata: {{name: blue}}
spec:
  endpointName: lazy
  model: {model}
  workers: 1
  scaleSettings:
    type: concurrency
    minInstances: 0
    maxInstances: 2
    scaleToZeroAfterSeconds: 1
    stableWindowSeconds: 6
"""


class Env:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.port = free_port()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MLENDPOINTS_LOCAL_HOME": str(self.home), "COLUMNS": "200"}
        done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=240)
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def state(self) -> dict[str, Any]:
        return json.loads((self.home / "endpoints" / "lazy" / "state.json").read_text())

    def router_backends(self) -> list[str]:
        config = json.loads((self.home / "endpoints" / "lazy" / "router.json").read_text())
        return list(config["deployments"]["blue"]["backends"])

    def score(self, key: str, timeout: float = 10) -> tuple[int, str]:
        body = json.dumps({"input_data": {"columns": COLUMNS, "data": [[0.01] * 10]}}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/score",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            assert isinstance(json.loads(resp.read())[0], float)
            return resp.status, resp.headers["x-mlendpoints-served-by"]


def instances(state: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return list(state["deployments"]["blue"]["instances"])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    env = Env(tmp_path)
    yield env
    if (env.home / "endpoints" / "lazy").exists():
        env.cli("local", "down", "lazy", check=False)


def test_scales_to_zero_when_idle_and_a_request_at_zero_starts_an_instance(
    env: Env, tmp_path: Path, diabetes_model: Path
) -> None:
    (tmp_path / "lazy.yaml").write_text(YAML.format(model=diabetes_model))
    up = env.cli("local", "up", "-f", str(tmp_path / "lazy.yaml"), "--port", str(env.port), "--detach")
    assert "blue: scaled on load, 1 instance(s) now (0..2, to zero after 1s idle)" in up.stdout, up.stdout
    state = env.state()
    key = state["keys"]["primaryKey"]
    scaler_pid = state["scaler"][0]["pid"]
    assert alive(scaler_pid)
    [first] = instances(state)
    assert env.score(key) == (200, "blue")

    # Idle: after the stable window (no scale-down before it) and 1 s without a request, zero.
    wait_for(lambda: not instances(env.state()), 40, "blue scaled to zero")
    assert env.router_backends() == []
    wait_for(lambda: not any(alive(p["pid"]) for p in first), 15, "blue's instance stopped")
    assert env.state()["deployments"]["blue"]["scale_reason"] == "scale-to-zero"
    listing = env.cli("local", "ls").stdout
    assert "0/0" in listing and "0 (scale-to-zero)" in listing, listing

    # `up` again with the same YAML keeps the scaler's count (zero) and the same scaler process.
    again = env.cli("local", "up", "-f", str(tmp_path / "lazy.yaml"), "--detach")
    assert "blue: scaled on load, 0 instance(s) now" in again.stdout, again.stdout
    state = env.state()
    assert not instances(state) and state["scaler"][0]["pid"] == scaler_pid

    # A request at zero: held by the router, an instance starts, the request is answered.
    started = time.monotonic()
    assert env.score(key, timeout=60) == (200, "blue")
    cold_start = time.monotonic() - started
    state = env.state()
    [pod] = instances(state)
    assert all(alive(p["pid"]) for p in pod)
    assert state["deployments"]["blue"]["scale_reason"] == "activate"
    assert len(env.router_backends()) == 1
    assert "1/1" in env.cli("local", "ls").stdout
    scaler_log = env.cli("local", "logs", "lazy", "-d", "scaler", "--tail", "20").stdout
    assert "0 -> 1 instance(s) (activate" in scaler_log, scaler_log
    print(f"cold start from zero, request answered after {cold_start:.1f}s")

    # A changed deployment rolls over the instance the scaler started, without waiting out a stop
    # grace period (the scaler reaps its exited children; a zombie would count as running).
    (tmp_path / "lazy.yaml").write_text(YAML.format(model=diabetes_model).replace("workers: 1", "workers: 2"))
    started = time.time()
    env.cli("local", "up", "-f", str(tmp_path / "lazy.yaml"), "--detach")
    finished = time.time()
    # `up` starts the new instance, waits until it is ready, then stops the old one: from the old
    # server's "Shutting down" (its SIGTERM) to `up` returning is that stop, well under the grace
    # period. (`up` as a whole also waits for the new instance to load: 10 s on a slow machine.)
    old_logs = "\n".join(Path(p["log"]).read_text() for p in pod if Path(p["log"]).is_file())
    stopping = [
        float(json.loads(line[line.index("{") :])["ts"])
        for line in old_logs.splitlines()
        if '"Shutting down"' in line and "{" in line
    ]
    assert stopping, old_logs[-2000:]
    # (the pod's log also holds its earlier stops, when it scaled to zero: the last one is this one)
    assert finished - max(stopping) < STOP_GRACE_S, (finished - started, finished - max(stopping))
    assert not any(alive(p["pid"]) for p in pod)
    state = env.state()
    assert all(alive(p["pid"]) for new in instances(state) for p in new)
    assert state["scaler"][0]["pid"] == scaler_pid

    env.cli("local", "down", "lazy")
    assert not alive(scaler_pid)
    assert not any(alive(p["pid"]) for new in instances(state) for p in new)
