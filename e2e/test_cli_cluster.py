"""`mlendpoints status, invoke, get-credentials, regenerate-keys, logs` on the real cluster and operator."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from e2e.operator_deploy import Kubectl, wait_for

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "mlendpoints")
API = "mlendpoints.io/v1alpha1"
READY_TIMEOUT = 240
ROW = {"columns": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], "data": [[0.01] * 10]}


def cli(kubectl: Kubectl, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubectl.kubeconfig, "COLUMNS": "200"}
    return subprocess.run([CLI, *args, "-n", namespace], env=env, capture_output=True, text=True, timeout=120)


def manifests(name: str) -> list[dict[str, Any]]:
    def deployment(dep: str, version: int) -> dict[str, Any]:
        return {
            "apiVersion": API,
            "kind": "OnlineDeployment",
            "metadata": {"name": dep},
            "spec": {
                "endpointName": name,
                "model": f"models:/diabetes/{version}",
                "workers": 1,
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            },
        }

    return [
        {
            "apiVersion": API,
            "kind": "OnlineEndpoint",
            "metadata": {"name": name},
            "spec": {"traffic": {"blue": 100}, "router": {"replicas": 1}},
        },
        deployment("blue", 1),
        deployment("green", 2),
    ]


def ready(kubectl: Kubectl, namespace: str, kind: str, name: str) -> bool:
    obj = kubectl.get(kind, name, namespace) or {}
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (obj.get("status") or {}).get("conditions", [])
    )


def post(url: str, key: str) -> int:
    req = urllib.request.Request(
        url,
        data=json.dumps({"input_data": ROW}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_cluster_commands(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    kubectl.apply(manifests("diabetes"), namespace)
    for kind, name in (
        ("onlinedeployment", "blue"),
        ("onlinedeployment", "green"),
        ("onlineendpoint", "diabetes"),
    ):
        wait_for(f"{kind}/{name} Ready", partial(ready, kubectl, namespace, kind, name), READY_TIMEOUT, 1)

    status = cli(kubectl, namespace, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    blue = next(line for line in lines if " blue " in line)
    green = next(line for line in lines if " green " in line)
    assert "100%" in blue and "1/1" in blue and "(v1)" in blue
    assert "0%" in green and "(v2)" in green
    assert "diabetes" in status.stdout and "Ready=True" in status.stdout

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"input_data": ROW}))
    invoked = cli(kubectl, namespace, "invoke", "diabetes", "--request-file", str(request))
    assert invoked.returncode == 0, invoked.stderr
    assert "served by: blue" in invoked.stdout
    assert isinstance(
        json.loads(invoked.stdout[: invoked.stdout.index("]") + 1].split("\n", 1)[-1])[0], float
    )
    pinned = cli(kubectl, namespace, "invoke", "diabetes", "-r", str(request), "--deployment", "green")
    assert pinned.returncode == 0 and "served by: green" in pinned.stdout, pinned.stderr

    creds = cli(kubectl, namespace, "get-credentials", "diabetes", "-o", "json")
    keys = json.loads(creds.stdout)
    secret = kubectl.json("-n", namespace, "get", "secret", "diabetes-keys")
    assert keys["primaryKey"] == base64.b64decode(secret["data"]["primaryKey"]).decode()

    rotated = cli(kubectl, namespace, "regenerate-keys", "diabetes", "--key-type", "primary")
    assert rotated.returncode == 0, rotated.stderr
    after = json.loads(cli(kubectl, namespace, "get-credentials", "diabetes", "-o", "json").stdout)
    assert after["secondaryKey"] == keys["secondaryKey"] and after["primaryKey"] != keys["primaryKey"]
    service = kubectl.json("-n", namespace, "get", "service", "diabetes")
    url = f"http://{service['spec']['clusterIP']}/score"
    wait_for("the router to take the new primary key", lambda: post(url, after["primaryKey"]) == 200, 30)
    wait_for("the old primary key to be refused", lambda: post(url, keys["primaryKey"]) == 401, 30)
    assert post(url, keys["secondaryKey"]) == 200  # the other key kept working
    reinvoked = cli(kubectl, namespace, "invoke", "diabetes", "-r", str(request))  # with the new primary
    assert reinvoked.returncode == 0 and "served by: blue" in reinvoked.stdout, reinvoked.stderr

    fetch_logs = cli(kubectl, namespace, "logs", "diabetes", "--deployment", "blue", "--container", "fetch")
    assert fetch_logs.returncode == 0, fetch_logs.stderr
    assert "models:/diabetes/1" in fetch_logs.stdout and "[blue-server-" in fetch_logs.stdout
    router_logs = cli(kubectl, namespace, "logs", "diabetes")
    assert router_logs.returncode == 0 and "[diabetes-router-" in router_logs.stdout, router_logs.stderr

    missing = cli(kubectl, namespace, "invoke", "nope", "-r", str(request))
    assert missing.returncode == 1 and "no OnlineEndpoint 'nope'" in missing.stderr
