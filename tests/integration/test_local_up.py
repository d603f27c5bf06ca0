"""`mlendpoints local up/ls/logs/down` end to end: the real CLI, renderers, servers and router."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.models import save_diabetes_regressor
from mlendpoints.local.runner import alive
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "mlendpoints")

ENDPOINT = """\
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineEndpoint
metadata: {{name: diabetes}}
spec:
  traffic: {{blue: {blue}, green: {green}}}
  mirrorTraffic: {{shadow: 50}}
"""
DEPLOYMENT = """\
---
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineDeployment
metadata: {{name: {name}}}
spec: {{endpointName: diabetes, model: {model}, workers: 1, instanceCount: {instances}}}
"""


class LocalEnv:
    def __init__(self, root: Path, v1: Path, v2: Path) -> None:
        self.root = root
        self.v1, self.v2 = v1, v2
        self.home = root / "home"
        self.yaml_dir = root / "diabetes-online"
        self.yaml_dir.mkdir()
        self.port = free_port()

    def write(self, blue: int, green: int, green_model: Path | None = None, green_instances: int = 1) -> None:
        text = ENDPOINT.format(blue=blue, green=green)
        text += DEPLOYMENT.format(name="blue", model=self.v1, instances=1)
        text += DEPLOYMENT.format(name="green", model=green_model or self.v2, instances=green_instances)
        text += DEPLOYMENT.format(name="shadow", model=self.v2, instances=1)
        (self.yaml_dir / "endpoint.yaml").write_text(text)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MLENDPOINTS_LOCAL_HOME": str(self.home), "COLUMNS": "200"}
        done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=240)
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def state(self) -> dict:
        return json.loads((self.home / "endpoints" / "diabetes" / "state.json").read_text())

    def score(self, key: str, n: int) -> collections.Counter[str]:
        body = json.dumps({"input_data": {"columns": COLUMNS, "data": [[0.01] * 10]}}).encode()
        served: collections.Counter[str] = collections.Counter()
        for _ in range(n):
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/score",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert isinstance(json.loads(resp.read())[0], float)
                served[resp.headers["x-mlendpoints-served-by"]] += 1
        return served


COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def local_env(tmp_path_factory: pytest.TempPathFactory, diabetes_model: Path) -> Iterator[LocalEnv]:
    root = tmp_path_factory.mktemp("local-up")
    env = LocalEnv(root, diabetes_model, save_diabetes_regressor(root / "diabetes-v2", alpha=0.1))
    yield env
    if (env.home / "endpoints" / "diabetes").exists():
        env.cli("local", "down", "diabetes", check=False)


def pids(state: dict, deployment: str) -> list[int]:
    return [p["pid"] for pod in state["deployments"][deployment]["instances"] for p in pod]


def test_up_scores_splits_mirrors_then_applies_changes_and_goes_down(local_env: LocalEnv) -> None:
    local_env.write(blue=50, green=50)
    up = local_env.cli(
        "local", "up", "-f", str(local_env.yaml_dir), "--port", str(local_env.port), "--detach"
    )
    state = local_env.state()
    key = state["keys"]["primaryKey"]
    assert f"http://127.0.0.1:{local_env.port}/score" in up.stdout
    assert key in up.stdout and "curl -s" in up.stdout

    # No key -> the router refuses.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{local_env.port}/score", data=b"{}", timeout=10)
    assert refused.value.code == 401

    served = local_env.score(key, 60)
    assert set(served) == {"blue", "green"}, served  # 50/50: both serve; shadow never answers live

    # `invoke --local` finds the endpoint, its key and port; --deployment pins.
    request = local_env.root / "request.json"
    request.write_text(json.dumps({"input_data": {"columns": COLUMNS, "data": [[0.01] * 10]}}))
    invoked = local_env.cli("invoke", "diabetes", "--local", "-r", str(request), "--deployment", "shadow")
    assert "served by: shadow" in invoked.stdout

    # The mirror copy reached the shadow deployment's own server.
    shadow_port = next(iter(state["deployments"]["shadow"]["instances"][0][0]["ports"].values()))
    with urllib.request.urlopen(f"http://127.0.0.1:{shadow_port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'route="/score"' in metrics

    # A traffic edit: same router process, new split at once.
    router_pid = state["router"][0]["pid"]
    blue_pids = pids(state, "blue")
    local_env.write(blue=0, green=100)
    local_env.cli("local", "up", "-f", str(local_env.yaml_dir), "--detach")
    state = local_env.state()
    assert state["router"][0]["pid"] == router_pid
    assert pids(state, "blue") == blue_pids
    assert local_env.score(key, 20) == {"green": 20}

    # A model change rolls green over to new processes and stops the old ones; scaling adds an instance.
    # Requests keep flowing during the rollout, and none fails.
    old_green = pids(state, "green")
    local_env.write(blue=0, green=100, green_model=local_env.v1, green_instances=2)
    during: collections.Counter[str] = collections.Counter()
    failures: list[BaseException] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            try:
                during.update(local_env.score(key, 1))
            except Exception as exc:
                failures.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        local_env.cli("local", "up", "-f", str(local_env.yaml_dir), "--detach")
        time.sleep(0.5)
    finally:
        done.set()
        loader.join()
    assert not failures, failures[:3]
    assert sum(during.values()) > 10
    state = local_env.state()
    assert len(state["deployments"]["green"]["instances"]) == 2
    assert not set(pids(state, "green")) & set(old_green)
    assert not any(alive(pid) for pid in old_green)
    assert local_env.score(key, 10) == {"green": 10}

    listing = local_env.cli("local", "ls").stdout
    assert "diabetes" in listing and "running" in listing and "green" in listing
    logs = local_env.cli("local", "logs", "diabetes", "--deployment", "green", "--tail", "5").stdout
    assert "/server]" in logs and "/fetch-model]" in logs

    all_pids = [p["pid"] for p in state["router"]] + [
        pid for d in state["deployments"] for pid in pids(state, d)
    ]
    local_env.cli("local", "down", "diabetes")
    assert not any(alive(pid) for pid in all_pids)
    assert "no local endpoints" in local_env.cli("local", "ls").stdout


def test_invalid_traffic_is_refused_with_the_webhook_message(local_env: LocalEnv) -> None:
    local_env.write(blue=80, green=30)
    done = local_env.cli("local", "up", "-f", str(local_env.yaml_dir), "--detach", check=False)
    assert done.returncode == 1
    assert "spec.traffic: percentages sum to 110, must be 0 or 100" in done.stderr
    assert "Traceback" not in done.stderr and "hint:" in done.stderr


def test_a_model_that_cannot_be_fetched_fails_with_the_fetch_reason(
    local_env: LocalEnv, tmp_path: Path
) -> None:
    local_env.write(blue=100, green=0, green_model=tmp_path / "missing-model")
    done = local_env.cli(
        "local", "up", "-f", str(local_env.yaml_dir), "--detach", "--port", str(free_port()), check=False
    )
    assert done.returncode == 1
    assert "init container fetch-model failed" in done.stderr and "missing-model" in done.stderr
    assert "Traceback" not in done.stderr
    local_env.cli("local", "down", "diabetes", check=False)
