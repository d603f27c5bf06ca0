"""Azure ML YAML round trip: the corpus's online endpoint and deployments run under `local up` and serve.

The Azure files are given to `mlendpoints local up -f` as they are (imported on
the way, as `mlendpoints import azureml` imports them): a no-code MLflow
deployment with all the traffic and a scoring-script deployment reached by
Azure's pin header. Real CLI, model servers and router on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.azureml import copy_corpus
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "mlendpoints")
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def post(url: str, body: dict, headers: dict[str, str]) -> tuple[dict | list, dict[str, str]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()), {k.lower(): v for k, v in response.headers.items()}


def test_azure_online_files_run_under_local_up_and_serve(tmp_path: Path, diabetes_model: Path) -> None:
    root = copy_corpus(tmp_path, write_model=lambda dest: shutil.copytree(diabetes_model, dest))
    home, port = tmp_path / "home", free_port()
    env = {**os.environ, "MLENDPOINTS_LOCAL_HOME": str(home), "COLUMNS": "200"}
    files = [
        root / "online/mlflow/endpoint.yml",
        root / "online/mlflow/sklearn-deployment.yml",
        root / "online/custom-script/blue-deployment.yml",
    ]
    up = subprocess.run(
        [CLI, "local", "up", *(a for f in files for a in ("-f", str(f))), "--port", str(port), "--detach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # The fields not carried over are listed, as `import azureml` lists them.
        assert "instance_type: 'Standard_DS3_v2'" in up.stdout
        assert "environment.conda_file" in up.stdout
        state = json.loads((home / "endpoints" / "my-endpoint" / "state.json").read_text())
        auth = {"Authorization": f"Bearer {state['keys']['primaryKey']}"}
        url = f"http://127.0.0.1:{port}/score"

        # No code: the MLflow model answers Azure's input_data request; the deployment is named as Azure does.
        body = {"input_data": {"columns": COLUMNS, "data": [[0.01] * 10, [0.02] * 10]}}
        predictions, headers = post(url, body, auth)
        assert isinstance(predictions, list) and len(predictions) == 2
        assert all(isinstance(p, float) for p in predictions)
        assert headers["azureml-model-deployment"] == "sklearn-deployment"
        assert headers["x-mlendpoints-served-by"] == "sklearn-deployment"

        # The scoring script (code_configuration -> ConfigMap), pinned with Azure's header.
        answer, headers = post(url, {"data": [[0.01] * 10]}, {**auth, "azureml-model-deployment": "blue"})
        assert isinstance(answer, dict)
        assert answer["scored_by"] == "score.py"
        assert answer["predictions"] == pytest.approx(predictions[:1])  # the same model, the same answer
        assert headers["azureml-model-deployment"] == "blue"
    finally:
        subprocess.run([CLI, "local", "down", "my-endpoint"], env=env, capture_output=True, timeout=120)
