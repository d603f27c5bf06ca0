"""`mlendpoints-fetch` as a real process against a real MLflow server, real S3 (moto), GCS
(gcp-storage-emulator) and Azure Blob (Azurite) servers, and HTTP."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.emulators import AZURITE_ACCOUNT, azure_connection_string, azurite, gcs_emulator
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.servers import free_port, running

BIN = Path(sys.executable).parent
RECORD = ".mlendpoints-fetch.json"


@dataclass
class Result:
    code: int
    termination: str
    output: str


def fetch(uri: str, dest: Path, **env: str) -> Result:
    termination = dest.parent / f"{dest.name}.termination"
    termination.unlink(missing_ok=True)
    proc = subprocess.run(
        [str(BIN / "mlendpoints-fetch"), "--model-uri", uri, "--dest", str(dest)],
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
    return Result(proc.returncode, text, proc.stdout + proc.stderr)


def record(dest: Path) -> dict[str, str]:
    return json.loads((dest / RECORD).read_text())


def predicts(dest: Path) -> list[float]:
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(dest))
    return model.predict(
        pd.DataFrame([[0.01] * 10], columns=["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"])
    ).tolist()


# -- MLflow registry and runs ------------------------------------------------------------------------
def test_registry_version_alias_and_latest(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    for uri, version in (
        ("models:/diabetes/1", "1"),
        ("models:/diabetes@champion", "1"),
        ("models:/diabetes/latest", "2"),
    ):
        dest = tmp_path / uri.replace("/", "_").replace(":", "").replace("@", "_")
        result = fetch(uri, dest, **env)
        assert result.code == 0, result.output
        rec = record(dest)
        assert (rec["model_uri"], rec["resolved_uri"], rec["registry_version"]) == (
            uri,
            f"models:/diabetes/{version}",
            version,
        )
        assert rec["checksum"].startswith("sha256:")
        assert (dest / "MLmodel").is_file()
    v1, champion, latest = (
        record(tmp_path / n)
        for n in ("models_diabetes_1", "models_diabetes_champion", "models_diabetes_latest")
    )
    assert v1["checksum"] == champion["checksum"] != latest["checksum"]
    assert predicts(tmp_path / "models_diabetes_1") != predicts(tmp_path / "models_diabetes_latest")


def test_runs_uri(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    result = fetch(
        f"runs:/{mlflow_server.run_ids[0]}/model", tmp_path / "m", MLFLOW_TRACKING_URI=mlflow_server.url
    )
    assert result.code == 0, result.output
    assert record(tmp_path / "m")["registry_version"] is None
    assert (tmp_path / "m" / "MLmodel").is_file()


def test_second_fetch_of_the_same_content_changes_nothing(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    dest = tmp_path / "m"
    assert_second_fetch_changes_nothing("models:/diabetes/2", dest, env)
    assert fetch("models:/diabetes/1", dest, **env).code == 0  # new content replaces the old
    assert record(dest)["registry_version"] == "1"


def assert_second_fetch_changes_nothing(uri: str, dest: Path, env: dict[str, str]) -> None:
    first = fetch(uri, dest, **env)
    assert first.code == 0, first.output
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    again = fetch(uri, dest, **env)
    assert again.code == 0 and "unchanged" in again.output, again.output
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before


@pytest.mark.parametrize("uri", ["models:/diabetes/99", "models:/no-such-model/1", "models:/no-such-model@x"])
def test_registry_not_found(mlflow_server: MlflowServer, tmp_path: Path, uri: str) -> None:
    result = fetch(uri, tmp_path / "m", MLFLOW_TRACKING_URI=mlflow_server.url)
    assert result.code != 0
    assert result.termination.startswith("mlendpoints-fetch failed: not found:"), result.termination


def test_tracking_server_unreachable(tmp_path: Path) -> None:
    result = fetch(
        "models:/diabetes/1",
        tmp_path / "m",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    assert result.code != 0
    assert result.termination.startswith("mlendpoints-fetch failed: unreachable:"), result.termination


# -- S3 (moto in server mode) ---------------------------------------------------------------------------
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def moto(tmp: Path, *env_pairs: tuple[str, str]) -> Iterator[str]:
    port = free_port()
    argv = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running(
        argv,
        ready_url=f"http://127.0.0.1:{port}/moto-api/",
        log=tmp / f"moto-{port}.log",
        env=dict(env_pairs),
    ):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def s3(diabetes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 API (moto server) holding the diabetes model as a folder and as a tar.gz."""
    import boto3

    with contextlib.contextmanager(moto)(tmp_path_factory.mktemp("moto")) as url:
        client = boto3.client(
            "s3",
            endpoint_url=url,
            **{k.lower(): v for k, v in S3_ENV.items() if k != "AWS_DEFAULT_REGION"},
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="models")
        for file in diabetes_model.iterdir():
            client.upload_file(str(file), "models", f"diabetes/{file.name}")
        client.put_object(Bucket="models", Key="archives/diabetes.tar.gz", Body=tar_gz(diabetes_model))
        yield url


def tar_gz(model_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(model_dir, arcname="diabetes")
    return buf.getvalue()


@pytest.mark.parametrize(
    "uri", ["s3://models/diabetes", "s3://models/diabetes/", "s3://models/archives/diabetes.tar.gz"]
)
def test_s3_folder_and_archive(s3: str, diabetes_model: Path, tmp_path: Path, uri: str) -> None:
    result = fetch(uri, tmp_path / "m", MLFLOW_S3_ENDPOINT_URL=s3, **S3_ENV)
    assert_fetched(result, tmp_path / "m", diabetes_model)


def assert_fetched(result: Result, dest: Path, source: Path) -> None:
    """The fetch succeeded and dest holds the source model's files (and the record), predicting alike."""
    assert result.code == 0, result.output
    assert sorted(p.name for p in dest.iterdir()) == sorted([RECORD, *(p.name for p in source.iterdir())])
    assert predicts(dest) == predicts(source)


def test_s3_missing_key_is_not_found(s3: str, tmp_path: Path) -> None:
    result = fetch("s3://models/nothing-here", tmp_path / "m", MLFLOW_S3_ENDPOINT_URL=s3, **S3_ENV)
    assert result.code != 0
    assert "failed: not found:" in result.termination, result.termination


def test_s3_with_refused_credentials_is_unauthorized(tmp_path: Path) -> None:
    # With INITIAL_NO_AUTH_ACTION_COUNT=0 moto checks every request's credentials, as S3 does.
    with contextlib.contextmanager(moto)(tmp_path, ("INITIAL_NO_AUTH_ACTION_COUNT", "0")) as url:
        result = fetch("s3://models/diabetes", tmp_path / "m", MLFLOW_S3_ENDPOINT_URL=url, **S3_ENV)
    assert result.code != 0
    assert "failed: unauthorized:" in result.termination, result.termination


# -- HTTP(S) and local paths ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web(diabetes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real HTTP server with the model as tar.gz and as folder, a pickled estimator and a text file."""
    import shutil

    import joblib
    from sklearn.linear_model import LinearRegression

    root = tmp_path_factory.mktemp("web")
    (root / "diabetes.tar.gz").write_bytes(tar_gz(diabetes_model))
    shutil.copytree(diabetes_model, root / "folder")
    joblib.dump(LinearRegression().fit([[0.0] * 10, [1.0] * 10], [0.0, 10.0]), root / "estimator.joblib")
    (root / "notes.txt").write_text("not a model")
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    with running(argv, ready_url=f"http://127.0.0.1:{port}/notes.txt", log=root.parent / "http.log"):
        yield f"http://127.0.0.1:{port}"


def test_http_tar_gz(web: str, diabetes_model: Path, tmp_path: Path) -> None:
    result = fetch(f"{web}/diabetes.tar.gz", tmp_path / "m")
    assert result.code == 0, result.output
    assert predicts(tmp_path / "m") == predicts(diabetes_model)
    assert record(tmp_path / "m")["checksum"] == record_of_local(diabetes_model, tmp_path)


def record_of_local(model_dir: Path, tmp_path: Path) -> str:
    assert fetch(str(model_dir), tmp_path / "local").code == 0
    return record(tmp_path / "local")["checksum"]


def test_http_folder(web: str, diabetes_model: Path, tmp_path: Path) -> None:
    result = fetch(f"{web}/folder/", tmp_path / "m")
    assert result.code == 0, result.output
    assert predicts(tmp_path / "m") == predicts(diabetes_model)


def test_single_file_estimator_becomes_an_mlflow_model(web: str, tmp_path: Path) -> None:
    result = fetch(f"{web}/estimator.joblib", tmp_path / "m")
    assert result.code == 0, result.output
    assert predicts(tmp_path / "m") == pytest.approx([0.1])


@pytest.mark.parametrize(
    ("path", "kind"), [("notes.txt", "not an MLflow model"), ("missing.tar.gz", "not found")]
)
def test_http_errors(web: str, tmp_path: Path, path: str, kind: str) -> None:
    result = fetch(f"{web}/{path}", tmp_path / "m")
    assert result.code != 0
    assert result.termination.startswith(f"mlendpoints-fetch failed: {kind}:"), result.termination


def test_local_folder_and_not_a_model(diabetes_model: Path, tmp_path: Path) -> None:
    assert fetch(str(diabetes_model), tmp_path / "m").code == 0
    assert record(tmp_path / "m")["resolved_uri"] == str(diabetes_model.resolve())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    result = fetch(str(empty), tmp_path / "n")
    assert result.code != 0
    assert "failed: not an MLflow model: no MLmodel file found" in result.termination


# -- Google Cloud Storage (gcp-storage-emulator) ----------------------------------------------------------
@pytest.fixture(scope="module")
def gcs(diabetes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real GCS JSON API holding the diabetes model as a folder and as a tar.gz; yields its URL."""
    from gcsfs.core import GCSFileSystem

    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as url:
        fs = GCSFileSystem(endpoint_url=url, token="anon")
        fs.mkdir("models")
        for file in diabetes_model.iterdir():
            fs.put_file(str(file), f"models/diabetes/{file.name}")
        fs.pipe_file("models/archives/diabetes.tar.gz", tar_gz(diabetes_model))
        yield url


@pytest.mark.parametrize(
    "uri", ["gs://models/diabetes", "gs://models/diabetes/", "gs://models/archives/diabetes.tar.gz"]
)
def test_gcs_folder_and_archive(gcs: str, diabetes_model: Path, tmp_path: Path, uri: str) -> None:
    assert_fetched(fetch(uri, tmp_path / "m", STORAGE_EMULATOR_HOST=gcs), tmp_path / "m", diabetes_model)


@pytest.mark.parametrize("uri", ["gs://models/nothing-here", "gs://no-such-bucket/diabetes"])
def test_gcs_missing_object_is_not_found(gcs: str, tmp_path: Path, uri: str) -> None:
    result = fetch(uri, tmp_path / "m", STORAGE_EMULATOR_HOST=gcs)
    assert result.code != 0
    assert "failed: not found:" in result.termination, result.termination


def test_gcs_second_fetch_changes_nothing(gcs: str, tmp_path: Path) -> None:
    assert_second_fetch_changes_nothing(
        "gs://models/diabetes", tmp_path / "m", {"STORAGE_EMULATOR_HOST": gcs}
    )


# -- Azure Blob Storage (Azurite) -------------------------------------------------------------------------
ABFSS = f"abfss://models@{AZURITE_ACCOUNT}.dfs.core.windows.net"
WASBS = f"wasbs://models@{AZURITE_ACCOUNT}.blob.core.windows.net"


@pytest.fixture(scope="module")
def azure(diabetes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's Blob service holding the diabetes model as a folder and as a tar.gz; yields its endpoint."""
    from azure.storage.blob import BlobServiceClient

    with azurite(tmp_path_factory.mktemp("azurite")) as endpoint:
        service = BlobServiceClient.from_connection_string(azure_connection_string(endpoint))
        container = service.create_container("models")
        for file in diabetes_model.iterdir():
            container.upload_blob(f"diabetes/{file.name}", file.read_bytes())
        container.upload_blob("archives/diabetes.tar.gz", tar_gz(diabetes_model))
        yield endpoint


@pytest.mark.parametrize(
    "uri",
    [
        f"{ABFSS}/diabetes",
        f"{ABFSS}/diabetes/",
        f"{ABFSS}/archives/diabetes.tar.gz",
        f"{WASBS}/diabetes",
        f"{WASBS}/archives/diabetes.tar.gz",
    ],
)
def test_azure_folder_and_archive(azure: str, diabetes_model: Path, tmp_path: Path, uri: str) -> None:
    result = fetch(uri, tmp_path / "m", AZURE_STORAGE_CONNECTION_STRING=azure_connection_string(azure))
    assert_fetched(result, tmp_path / "m", diabetes_model)


@pytest.mark.parametrize(
    "uri", [f"{ABFSS}/nothing-here", f"wasbs://no-such-container@{AZURITE_ACCOUNT}.blob.core.windows.net/m"]
)
def test_azure_missing_blob_is_not_found(azure: str, tmp_path: Path, uri: str) -> None:
    result = fetch(uri, tmp_path / "m", AZURE_STORAGE_CONNECTION_STRING=azure_connection_string(azure))
    assert result.code != 0
    assert "failed: not found:" in result.termination, result.termination


def test_azure_with_a_wrong_account_key_is_unauthorized(azure: str, tmp_path: Path) -> None:
    wrong_key = base64.b64encode(b"not the account key").decode()
    result = fetch(
        f"{ABFSS}/diabetes",
        tmp_path / "m",
        AZURE_STORAGE_CONNECTION_STRING=azure_connection_string(azure, key=wrong_key),
    )
    assert result.code != 0
    assert "failed: unauthorized:" in result.termination, result.termination


def test_azure_second_fetch_changes_nothing(azure: str, tmp_path: Path) -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": azure_connection_string(azure)}
    assert_second_fetch_changes_nothing(f"{ABFSS}/diabetes", tmp_path / "m", env)


def test_the_server_fetches_its_model_itself(diabetes_model: Path, tmp_path: Path) -> None:
    """`mlendpoints-serve --fetch-model-uri` (pods scaled on load: no init container) fetches, then serves;
    a failed fetch ends it with the fetch's own failure line."""
    import urllib.request

    port = free_port()
    dest = tmp_path / "model"
    serve = str(BIN / "mlendpoints-serve")
    argv = [serve, "--model-dir", str(dest), "--fetch-model-uri", str(diabetes_model),
            "--port", str(port), "--workers", "1"]  # fmt: skip
    with running(argv, ready_url=f"http://127.0.0.1:{port}/health", timeout=120, log=tmp_path / "serve.log"):
        row = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": [row]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert len(json.loads(resp.read())["predictions"]) == 1
    assert record(dest)["resolved_uri"] == str(diabetes_model.resolve())

    termination = tmp_path / "termination"
    missing = tmp_path / "no-such-model"
    proc = subprocess.run(
        [serve, "--model-dir", str(tmp_path / "other"), "--fetch-model-uri", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(BIN), "HOME": str(tmp_path), "MLENDPOINTS_TERMINATION_LOG": str(termination)},
    )
    assert proc.returncode == 1
    assert termination.read_text().startswith("mlendpoints-fetch failed: not found:"), termination.read_text()
