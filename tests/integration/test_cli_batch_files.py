"""`mlendpoints batch run -f`: a batch deployment's own file runs here, Azure's YAML as it is, or mlendpoints
YAML with a scoring script in a ConfigMap. Real CLI and driver processes, the iris model, CSV files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.integration.test_cli_batch import FILES, batch_run, csv_input, expected_rows, iris_frame

__all__ = ["csv_input"]  # the fixture, shared with test_cli_batch
AZURE = "https://azuremlschemas.azureedge.net/latest/{}.schema.json"
COLUMNS = ["row", "prediction", "file_name"]

# Azure's batch contract, reading the model where Azure puts a model registered from folder `model`.
SCRIPT = """
import os

import mlflow.pyfunc
import pandas as pd


def init():
    global model
    model = mlflow.pyfunc.load_model(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model"))


def run(mini_batch):
    frames = []
    for path in mini_batch:
        rows = pd.read_csv(path)
        frames.append(
            pd.DataFrame(
                {
                    "file": os.path.basename(path),
                    "prediction": model.predict(rows),
                    "tag": os.environ["SCORE_TAG"],
                }
            )
        )
    return pd.concat(frames)
"""


def write_yaml(path: Path, *docs: dict) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def test_azures_batch_files_run_as_they_are(iris_model: Path, csv_input: Path, tmp_path: Path) -> None:
    shutil.copytree(iris_model, tmp_path / "azure" / "model")
    endpoint = write_yaml(
        tmp_path / "azure" / "endpoint.yml",
        {
            "$schema": AZURE.format("batchEndpoint"),
            "name": "iris-batch",
            "defaults": {"deployment_name": "lr"},
        },
    )
    deployment = {
        "$schema": AZURE.format("modelBatchDeployment"),
        "endpoint_name": "iris-batch",
        "type": "model",
        "model": {"path": "model"},
        "compute": "azureml:batch-cluster",
        "resources": {"instance_count": 2},
        "settings": {
            "max_concurrency_per_instance": 2,
            "mini_batch_size": 2,
            "output_action": "append_row",
            "output_file_name": "scores.csv",
            "error_threshold": -1,
        },
    }
    first = write_yaml(tmp_path / "azure" / "lr.yml", {**deployment, "name": "lr"})
    second = write_yaml(tmp_path / "azure" / "other.yml", {**deployment, "name": "other"})
    out = tmp_path / "out"
    done = batch_run(
        "-f", str(endpoint), "-f", str(first), "-f", str(second), "-i", str(csv_input), "-o", str(out),
        home=tmp_path / "home",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Of two deployments, the endpoint's default runs; its settings are the file's.
    assert "batch deployment lr, model " in done.stdout
    assert "the deployment's 2 instances run as one here" in done.stdout
    assert "Succeeded: 3 of 3 items scored, 0 failed, in 2 mini-batches" in done.stdout
    assert "compute: 'azureml:batch-cluster'" in done.stdout  # Azure fields not carried over are listed
    # Azure's layout: the file named in the settings, without a header line.
    scores = pd.read_csv(out / "scores.csv", names=COLUMNS)
    pd.testing.assert_frame_equal(scores, expected_rows(iris_model), check_dtype=False)


def test_a_deployment_file_with_a_script_and_azures_model_folder(
    iris_model: Path, csv_input: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(iris_model, models / "iris-v3")  # not named as the script reads it: laid out
    deployment = write_yaml(
        tmp_path / "deployment.yaml",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "iris-code"},
            "data": {"score.py": SCRIPT},
        },
        {
            "apiVersion": "mlendpoints.io/v1alpha1",
            "kind": "BatchDeployment",
            "metadata": {"name": "iris-script"},
            "spec": {
                "endpointName": "iris-batch",
                "model": str(models / "iris-v3"),
                "codeConfiguration": {
                    "configMap": "iris-code",
                    "scoringScript": "score.py",
                    "modelFolder": "model",
                },
                "env": [{"name": "SCORE_TAG", "value": "from-the-deployment"}],
                "settings": {"miniBatchSize": 3},
            },
        },
    )
    out = tmp_path / "out"
    done = batch_run("-f", str(deployment), "-i", str(csv_input), "-o", str(out), home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert "Succeeded: 3 of 3 items scored, 0 failed, in 1 mini-batches" in done.stdout
    scores = pd.read_csv(out / "predictions.csv")
    assert set(scores["tag"]) == {"from-the-deployment"}
    frame = iris_frame()
    assert sorted(scores["file"]) == sorted(Path(name).name for name in FILES for _ in range(*FILES[name]))
    expected = expected_rows(iris_model)
    assert sorted(scores["prediction"]) == sorted(expected["prediction"])
    assert len(scores) == len(frame)
    assert sorted(p.name for p in (models / "iris-v3").iterdir()) == sorted(
        p.name for p in iris_model.iterdir()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--deployment", "lr"), "--deployment picks a BatchDeployment of the -f files"),
        ((), "batch run needs a model"),
    ],
)
def test_batch_run_says_what_it_lacks(
    csv_input: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = batch_run(*args, "-i", str(csv_input), "-o", str(tmp_path / "out"), home=tmp_path / "home")
    assert done.returncode != 0
    assert message in done.stderr + done.stdout


def test_a_file_without_a_batch_deployment_is_refused(csv_input: Path, tmp_path: Path) -> None:
    endpoint = write_yaml(
        tmp_path / "endpoint.yml",
        {
            "$schema": AZURE.format("batchEndpoint"),
            "name": "iris-batch",
            "defaults": {"deployment_name": "lr"},
        },
    )
    done = batch_run("-f", str(endpoint), "-i", str(csv_input), "-o", str(tmp_path / "out"), home=tmp_path)
    assert done.returncode != 0
    assert "expected one BatchDeployment in the files, found: none" in done.stderr + done.stdout
