"""The real `mlflow deployments` CLI, target `mlendpoints:/<namespace>`: create, predict, traffic, delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.operator_deploy import Kubectl

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

MLFLOW = str(Path(sys.executable).parent / "mlflow")
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def mlflow(kubectl: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubectl.kubeconfig}
    done = subprocess.run(
        [MLFLOW, "deployments", *args], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, f"mlflow deployments {args}: {done.stdout}\n{done.stderr}"
    return done


def test_create_predict_update_traffic_delete(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    target = ["-t", f"mlendpoints:/{namespace}"]
    common = ["-C", "endpoint=diabetes", "-C", "workers=1"]
    created = mlflow(kubectl, "create", *target, "--name", "blue", "-m", "models:/diabetes/1", *common,
                     "-C", "traffic=100")  # fmt: skip
    assert "python_function deployment blue is created" in created.stdout
    mlflow(kubectl, "create", *target, "--name", "green", "-m", "models:/diabetes/2", *common)

    endpoint = kubectl.json("-n", namespace, "get", "onlineendpoint", "diabetes")
    assert endpoint["spec"]["traffic"] == {"blue": 100}
    listed = mlflow(kubectl, "list", *target).stdout
    assert "blue" in listed and "green" in listed

    request = tmp_path / "input.json"
    # Records: the MLflow CLI reads --input-path with pandas.read_json's default orient.
    request.write_text(json.dumps([dict.fromkeys(COLUMNS, 0.01), dict.fromkeys(COLUMNS, 0.02)]))
    predicted = mlflow(kubectl, "predict", *target, "--name", "green", "--input-path", str(request))
    predictions = json.loads(predicted.stdout.strip().splitlines()[-1])
    assert len(predictions["predictions"]) == 2 and predictions["served_by"] == "green"

    mlflow(kubectl, "update", *target, "--name", "green", "-C", "traffic=30")
    endpoint = kubectl.json("-n", namespace, "get", "onlineendpoint", "diabetes")
    assert endpoint["spec"]["traffic"] == {"blue": 70, "green": 30}
    mlflow(
        kubectl,
        "update-endpoint",
        *target,
        "--endpoint",
        "diabetes",
        "-C",
        'traffic={"blue": 0, "green": 100}',
    )
    endpoint = kubectl.json("-n", namespace, "get", "onlineendpoint", "diabetes")
    assert endpoint["spec"]["traffic"] == {"blue": 0, "green": 100}

    mlflow(kubectl, "delete", *target, "--name", "green")
    assert kubectl.get("onlinedeployment", "green", namespace) is None or "deletionTimestamp" in (
        kubectl.get("onlinedeployment", "green", namespace) or {}
    ).get("metadata", {})
    endpoint = kubectl.json("-n", namespace, "get", "onlineendpoint", "diabetes")
    assert "green" not in endpoint["spec"].get("traffic", {})
    mlflow(kubectl, "delete-endpoint", *target, "--endpoint", "diabetes")
