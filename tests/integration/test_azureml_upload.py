"""`mlendpoints import azureml --upload-to`: local model folders and job inputs copied to a real S3 API
(moto in server mode), and fetched back from there by `mlendpoints-fetch`, as a pod's init container does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from click.testing import CliRunner

from mlendpoints.azureml import ImportOptions, import_document
from mlendpoints.cli.app import cli
from mlendpoints.errors import UserError
from tests.fixtures.azureml import copy_corpus
from tests.integration.batch_support import moto_s3

BIN = Path(sys.executable).parent
DIGEST = r"[0-9a-f]{16}"


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with moto_s3(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        s3_client(env).create_bucket(Bucket="models")
        yield env


@pytest.fixture
def in_s3_env(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    return s3_env


def objects(env: dict[str, str], prefix: str) -> dict[str, object]:
    """Key (under prefix) -> LastModified of every object there."""
    pages = s3_client(env).get_paginator("list_objects_v2").paginate(Bucket="models", Prefix=prefix)
    return {o["Key"][len(prefix) :]: o["LastModified"] for page in pages for o in page.get("Contents", [])}


def imported_deployment(root: Path, *extra: str) -> dict:
    result = CliRunner().invoke(
        cli,
        [
            "import",
            "azureml",
            str(root / "online/custom-script/blue-deployment.yml"),
            "--no-azure-check",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.stdout))[-1]


def test_a_local_model_is_uploaded_once_and_fetched_back(
    in_s3_env: dict[str, str], diabetes_model: Path, tmp_path: Path
) -> None:
    root = copy_corpus(tmp_path, write_model=lambda dest: shutil.copytree(diabetes_model, dest))
    local_model = root / "online/mlflow/sklearn-diabetes/model"
    resource = imported_deployment(root, "--upload-to", "s3://models/imported/")
    uri = resource["spec"]["model"]
    prefix, digest, folder = uri.rsplit("/", 2)
    assert prefix == "s3://models/imported/blue" and folder == "model"
    assert len(digest) == 16 and all(c in "0123456789abcdef" for c in digest)
    # Azure's layout is kept: the script still finds the model at AZUREML_MODEL_DIR/model.
    assert resource["spec"]["codeConfiguration"]["modelFolder"] == "model"
    key_prefix = uri.removeprefix("s3://models/") + "/"
    uploaded = objects(in_s3_env, key_prefix)
    assert sorted(uploaded) == sorted(
        p.relative_to(local_model).as_posix() for p in local_model.rglob("*") if p.is_file()
    )

    # The same folder again: the same URI, and nothing written again.
    assert imported_deployment(root, "--upload-to", "s3://models/imported")["spec"]["model"] == uri
    assert objects(in_s3_env, key_prefix) == uploaded

    # What a pod's init container does with the URI.
    dest = tmp_path / "fetched"
    fetched = subprocess.run(
        [str(BIN / "mlendpoints-fetch"), "--model-uri", uri, "--dest", str(dest)],
        capture_output=True,
        text=True,
        env={**os.environ, **in_s3_env},
        timeout=120,
    )
    assert fetched.returncode == 0, fetched.stderr
    for file in local_model.rglob("*"):
        if file.is_file():
            assert (dest / file.relative_to(local_model)).read_bytes() == file.read_bytes()

    # A changed model is a new path: a deployment on the old one keeps its files.
    (local_model / "README.md").write_text("retrained\n")
    changed = imported_deployment(root, "--upload-to", "s3://models/imported")["spec"]["model"]
    assert changed != uri and changed.endswith("/model")
    assert objects(in_s3_env, key_prefix) == uploaded


def test_a_command_jobs_local_input_is_uploaded(in_s3_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "diabetes.csv").write_text("age,sex\n0.1,0.2\n")
    job = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
        "name": "score-local",
        "command": "python score.py --data ${{inputs.data}} --table ${{inputs.table}}",
        "environment": {"image": "python:3.11"},
        "inputs": {
            "data": {"type": "uri_folder", "path": "./data"},
            "table": {"type": "uri_file", "path": "./data/diabetes.csv"},
        },
    }
    imported = import_document(tmp_path / "job.yml", job, ImportOptions(upload_to="s3://models/jobs"))
    uploaded = [f for f in imported.findings if "is uploaded to s3://models/jobs/score-local/" in f.message]
    assert [f.field for f in uploaded] == ["inputs.data.path", "inputs.table.path"]
    folder_uri = uploaded[0].message.rsplit(" ", 1)[-1]
    assert objects(in_s3_env, folder_uri.removeprefix("s3://models/") + "/").keys() == {"diabetes.csv"}
    command = imported.resource["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "--table $(MLENDPOINTS_INPUT_TABLE)/diabetes.csv" in command
    # Without --upload-to a local input is refused, with the way out named.
    with pytest.raises(UserError, match=r"'\./data' is not in storage a pod can read") as refused:
        import_document(tmp_path / "job.yml", job, ImportOptions())
    assert "--upload-to does it for a local path" in (refused.value.hint or "")


@pytest.mark.parametrize("destination", ["/tmp/models", "https://example.org/models", "s3:/models"])
def test_upload_to_must_be_object_storage(tmp_path: Path, destination: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "import",
            "azureml",
            str(copy_corpus(tmp_path) / "online/mlflow/endpoint.yml"),
            "--upload-to",
            destination,
        ],
    )
    assert isinstance(result.exception, UserError)
    assert result.exception.message == f"--upload-to {destination!r}: not an object storage folder"
