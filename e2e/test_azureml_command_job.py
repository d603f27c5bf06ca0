"""End to end on the cluster: an Azure ML command job, imported as it is, runs with its model input.

`mlendpoints import azureml job.yml` turns a commandJob with an `mlflow_model` input
(`azureml:diabetes:1`), a literal input, an output folder and a `code` folder into a ConfigMap and a
Job; `kubectl apply` runs it: the operator's webhook fetches the registered model into the pod, the
script (from the ConfigMap, the working directory) loads it through `${{inputs.model}}` and writes into
`${{outputs.scores}}` under the read-only root filesystem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.operator_deploy import Kubectl, wait_for
from e2e.test_model_inputs import EVALUATE, finished, local_predictions, mutating_webhook_ready

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "mlendpoints")
# The evaluation script of test_model_inputs, then a file written to the output folder.
SCRIPT = (
    EVALUATE
    + """
with open(os.path.join(sys.argv[3], "done.txt"), "w") as out:
    out.write(sys.argv[2])
print("WROTE " + str(sorted(os.listdir(sys.argv[3]))) + " SCALE " + sys.argv[2])
"""
)
AZURE_JOB = {
    "$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
    "name": "azure-evaluate",
    "display_name": "Evaluate diabetes",
    "command": "python evaluate.py ${{inputs.model}} ${{inputs.scale}} ${{outputs.scores}}",
    "code": "src",
    "inputs": {"model": {"type": "mlflow_model", "path": "azureml:diabetes:1"}, "scale": 2},
    "outputs": {"scores": {"type": "uri_folder"}},
    "environment": "azureml:sklearn-env:1",
    "compute": "azureml:cpu-cluster",
}


def test_an_azure_command_job_runs_with_its_model_input(
    kube_cluster: Any, kubectl: Kubectl, images: Any, namespace: str, tmp_path: Path
) -> None:
    wait_for("the mutating webhook registration", lambda: mutating_webhook_ready(kubectl), 60)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "evaluate.py").write_text(SCRIPT)
    (tmp_path / "job.yml").write_text(yaml.safe_dump(AZURE_JOB, sort_keys=False))
    imported = subprocess.run(
        [CLI, "import", "azureml", str(tmp_path / "job.yml"), "--job-image", images.serving],
        env={**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    assert "outputs.scores: a writable folder" in imported.stderr  # not uploaded, and said so
    kubectl.apply(list(yaml.safe_load_all(imported.stdout)), namespace)
    assert finished(kubectl, namespace, "azure-evaluate") == "Complete"
    logs = kubectl.run("-n", namespace, "logs", "job/azure-evaluate", "-c", "main")
    [line] = [x for x in logs.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["dir"] == "/var/mlendpoints/inputs/model" and "MLmodel" in result["files"]
    assert result["predictions"] == pytest.approx(local_predictions(tmp_path, 1.0)), "version 1"
    assert "WROTE ['done.txt'] SCALE 2" in logs
    pods = kubectl.json("-n", namespace, "get", "pods", "-l", "job-name=azure-evaluate")["items"]
    resolved = json.loads(pods[0]["metadata"]["annotations"]["mlendpoints.io/resolved-models"])
    assert resolved == {"model": "models:/diabetes/1"}
