"""The server against its own /swagger.json, with schemathesis (every check on, both generation modes).

A 5xx, a response the document does not describe, a request the document calls valid
that the server refuses, or one it calls invalid that the server accepts: each fails.
Real `mlendpoints-serve` processes: the diabetes model (no-code) and a scoring-script
deployment, whose document describes only the `/score` it serves (POST, and GET with query parameters).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.serving.support import BIN, Server, serve

pytestmark = pytest.mark.slow

# A script that takes any JSON (what its minimal document promises) and never raises on it.
ANY_JSON_SCRIPT = """
import json


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data)
    return {"type": type(data).__name__, "size": len(raw_data)}
"""


@pytest.fixture(scope="module")
def diabetes_server(diabetes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("openapi")
    with serve(diabetes_model, logs / "serve.log") as s:
        yield s


@pytest.fixture(scope="module")
def tensor_server(tensor_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tensor_model, tmp_path_factory.mktemp("openapi-tensor") / "serve.log") as s:
        yield s


@pytest.fixture(scope="module")
def script_server(diabetes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("openapi-script")
    script = work / "score.py"
    script.write_text(ANY_JSON_SCRIPT)
    with serve(diabetes_model, work / "serve.log", "--scoring-script", str(script)) as s:
        yield s


def schemathesis_run(server: Server, tmp_path: Path, *extra: str) -> str:
    """`schemathesis run` on the server's own document: every check, positive and negative data.

    The CLI, as a user runs it (its pytest plugin's fixture loader does not work with
    pytest 9); bounded and deterministic, so a run is reproducible and takes seconds.
    """
    argv = [
        str(BIN / "schemathesis"),
        "run",
        f"{server.url}/swagger.json",
        "--checks",
        "all",
        "--mode",
        "all",
        "--max-examples",
        "60",
        "--generation-deterministic",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--continue-on-failure",
        "--no-color",
        *extra,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out[-12000:] + proc.stderr[-2000:]
    assert re.search(r"(\d+) generated, \1 passed", out), out[-3000:]
    return out


def test_the_no_code_server_keeps_its_document(diabetes_server: Server, tmp_path: Path) -> None:
    out = schemathesis_run(diabetes_server, tmp_path)
    assert "Tested: 2" in out  # /score and /invocations


def test_a_tensor_model_server_keeps_its_document_but_for_booleans(
    tensor_server: Server, tmp_path: Path
) -> None:
    # One known looseness, so negative data is not held: numpy reads [1, 2, 3, true] as integers,
    # so a boolean among a float tensor's numbers is taken as 1/0 (all-boolean rows are refused).
    # Refusing it would mean a Python-level look at every value of every tensor request.
    out = schemathesis_run(tensor_server, tmp_path, "--exclude-checks", "negative_data_rejection")
    assert "Tested: 2" in out


def test_a_scoring_script_server_keeps_its_document(script_server: Server, tmp_path: Path) -> None:
    out = schemathesis_run(script_server, tmp_path)
    assert "Tested: 2" in out  # POST and GET /score only


def test_the_documents_describe_what_each_deployment_serves(
    diabetes_server: Server, tensor_server: Server, script_server: Server
) -> None:
    with diabetes_server.client() as c:
        doc = c.get("/swagger.json").json()
    assert sorted(doc["paths"]) == ["/invocations", "/score"]
    body = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["properties"]["params"]["nullable"] is True
    assert body["text/csv"]["schema"]["pattern"].startswith("^age,sex,bmi")
    with tensor_server.client() as c:
        body = c.get("/swagger.json").json()["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert list(body) == ["application/json"]  # no pattern could say which CSV a tensor model takes
    with script_server.client() as c:
        doc = c.get("/swagger.json").json()
        # the routes a script deployment does not serve say so, on every protocol
        assert c.post("/invocations", json={"inputs": [1]}).status_code == 404
        assert c.get("/v2/models/model").status_code == 404
    assert list(doc["paths"]) == ["/score"]
    assert sorted(doc["paths"]["/score"]) == ["get", "post"]  # GET: azmlinfsrv's query parameters
    assert "input_data" not in str(doc)
