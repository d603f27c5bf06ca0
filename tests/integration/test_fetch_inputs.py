"""`mlendpoints-fetch --mode input` (model inputs of any pod) as a real process: a single file always
arrives as DEST/<filename>, opened afterwards with the library that wrote it; a folder arrives as is.

Servers: Python's http.server and moto's S3 server, both on loopback.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mlendpoints_serving.contract import FETCH_MODE_INPUT
from tests.fixtures.servers import free_port, running

BIN = Path(sys.executable).parent
RECORD = ".mlendpoints-fetch.json"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def fetch_input(uri: str, dest: Path, **env: str) -> tuple[int, str, str]:
    """(exit code, termination line, output) of `mlendpoints-fetch --mode input`."""
    termination = dest.parent / f"{dest.name}.termination"
    proc = subprocess.run(
        [str(BIN / "mlendpoints-fetch"), "--model-uri", uri, "--dest", str(dest), "--mode", FETCH_MODE_INPUT],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            "PATH": str(BIN),
            "HOME": str(dest.parent),
            "MLENDPOINTS_TERMINATION_LOG": str(termination),
            **env,
        },
    )
    text = termination.read_text() if termination.exists() else ""
    return proc.returncode, text, proc.stdout + proc.stderr


def files(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and p.name != RECORD)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server with a pickled estimator (not an MLflow model) and a plain folder."""
    import joblib
    from sklearn.linear_model import LinearRegression

    root = tmp_path_factory.mktemp("web")
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 10.0]), root / "model.pkl")
    (root / "lookup").mkdir()
    (root / "lookup" / "labels.txt").write_text("low\nhigh\n")
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    with running(argv, ready_url=f"http://127.0.0.1:{port}/model.pkl", log=root.parent / "http.log"):
        yield f"http://127.0.0.1:{port}"


def test_a_single_file_over_http_arrives_as_dest_slash_filename(web: str, tmp_path: Path) -> None:
    import joblib

    dest = tmp_path / "model"
    code, termination, output = fetch_input(f"{web}/model.pkl", dest)
    assert code == 0, output + termination
    # Not wrapped as an MLflow model (that is --mode model): the file itself, under its own name.
    assert files(dest) == ["model.pkl"]
    assert joblib.load(dest / "model.pkl").predict([[0.5]]).tolist() == pytest.approx([5.0])


def test_a_second_fetch_of_the_same_file_changes_nothing(web: str, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    assert fetch_input(f"{web}/model.pkl", dest)[0] == 0
    before = (dest / "model.pkl").stat().st_mtime_ns
    code, _, output = fetch_input(f"{web}/model.pkl", dest)
    assert code == 0
    assert "unchanged" in output
    assert (dest / "model.pkl").stat().st_mtime_ns == before


def test_a_folder_that_is_not_an_mlflow_model_arrives_as_is(web: str, tmp_path: Path) -> None:
    dest = tmp_path / "lookup"
    code, termination, output = fetch_input(f"{web}/lookup/", dest)
    assert code == 0, output + termination
    assert files(dest) == ["labels.txt"]
    assert (dest / "labels.txt").read_text() == "low\nhigh\n"


def test_a_missing_file_fails_with_its_reason_on_the_termination_log(web: str, tmp_path: Path) -> None:
    code, termination, _ = fetch_input(f"{web}/nothing.pkl", tmp_path / "m")
    assert code != 0
    assert termination.startswith("mlendpoints-fetch failed: not found:"), termination


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server with one bucket holding a single numpy file."""
    import io

    import boto3

    tmp = tmp_path_factory.mktemp("moto")
    port = free_port()
    argv = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running(argv, ready_url=f"{url}/moto-api/", log=tmp / "moto.log"):
        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="models")
        buf = io.BytesIO()
        np.save(buf, np.arange(6.0).reshape(2, 3))
        client.put_object(Bucket="models", Key="weights/embedding.npy", Body=buf.getvalue())
        yield url


def test_a_single_s3_object_arrives_as_dest_slash_filename(s3: str, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    code, termination, output = fetch_input(
        "s3://models/weights/embedding.npy", dest, MLFLOW_S3_ENDPOINT_URL=s3, **S3_ENV
    )
    assert code == 0, output + termination
    assert files(dest) == ["embedding.npy"]
    assert np.load(dest / "embedding.npy").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_model_mode_still_requires_an_mlflow_model(s3: str, tmp_path: Path) -> None:
    """The default mode (deployments) is unchanged: a lone .npy is not a servable model."""
    termination = tmp_path / "t"
    proc = subprocess.run(
        [
            str(BIN / "mlendpoints-fetch"),
            "--model-uri",
            "s3://models/weights/embedding.npy",
            "--dest",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            "PATH": str(BIN),
            "HOME": str(tmp_path),
            "MLENDPOINTS_TERMINATION_LOG": str(termination),
            "MLFLOW_S3_ENDPOINT_URL": s3,
            **S3_ENV,
        },
    )
    assert proc.returncode != 0
    assert termination.is_file(), proc.stdout + proc.stderr
    assert termination.read_text().startswith("mlendpoints-fetch failed: not an MLflow model:")
