"""The same scoring scripts under Azure ML's own inference server and under mlendpoints-serve.

azmlinfsrv (azureml-inference-server-http 1.5.1, in its own venv: scripts/azmlinfsrv-venv.sh)
and mlendpoints-serve run each script on loopback; every request goes to both, and the answers
must agree: status, media type, body, `x-ms-run-function-failed`, request ids. The differences
mlendpoints keeps on purpose (docs/azureml.md) are asserted as such, not skipped:
- an error body also carries our `error: {code, message}` beside Azure's `message`;
- a plain run() given no body gets our 400 (azmlinfsrv calls run("") and answers its 500).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.servers import free_port, running
from tests.unit.serving.support import serve

ROOT = Path(__file__).resolve().parents[2]
AZMLINFSRV = ROOT / ".venv-azmlinfsrv" / "bin" / "azmlinfsrv"

pytestmark = pytest.mark.skipif(
    not AZMLINFSRV.exists(), reason="no .venv-azmlinfsrv: `make setup` (scripts/azmlinfsrv-venv.sh) builds it"
)

PLAIN = """
import json


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("explode"):
        raise RuntimeError("exploded on purpose: secret-in-message")
    if data.get("opaque"):
        return object()
    return {"echo": data, "length": len(raw_data)}
"""

HEADERS = """
def init():
    pass


def run(data, request_headers):
    seen = {k: v for k, v in request_headers.items() if k != "Host"}  # the port differs
    return {"data": data, "headers": seen}
"""

DECORATED = """
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@input_schema("scale", StandardPythonParameterType(2.0))
@output_schema(StandardPythonParameterType({"sums": [3.0]}))
def run(data, scale=1.0):
    return {"sums": (data.sum(axis=1) * scale).tolist(), "data_type": type(data).__name__}
"""

RAWHTTP = """
import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    if request.args.get("plain"):
        return {"plain": True, "method": request.method}
    if request.args.get("explode"):
        raise RuntimeError("rawhttp exploded: secret-in-message")
    if request.args.get("busy"):
        return AMLResponse(None, 503)
    seen = {
        "method": request.method,
        "args": request.args.to_dict(flat=False),
        "body": request.get_data(as_text=True),
        "full_path": request.full_path,
        "custom": request.headers.get("X-Custom"),
    }
    return AMLResponse(json.dumps(seen), 201, {"Content-Type": "application/json", "X-Reply": "r1"})
"""

JSON = {"content-type": "application/json"}


@contextlib.contextmanager
def both(
    script_text: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    beside: dict[str, str] | None = None,
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """(mlendpoints, azmlinfsrv) clients, each server running the script with AZUREML_MODEL_DIR set;
    `beside`: other files of the script's folder (name -> text)."""
    code, model = tmp_path / "code", tmp_path / "model"
    code.mkdir()
    model.mkdir()
    (code / "score.py").write_text(script_text)
    for name, text in (beside or {}).items():
        (code / name).write_text(text)
    port = free_port()
    argv = [str(AZMLINFSRV), "--entry_script", "score.py", "--port", str(port), "--worker_count", "1"]
    azure_env = {
        "AZUREML_MODEL_DIR": str(model),
        "PATH": f"{AZMLINFSRV.parent}{os.pathsep}{os.environ['PATH']}",
        **(env or {}),
    }
    with (
        running(
            argv,
            ready_url=f"http://127.0.0.1:{port}/",
            timeout=60,
            env=azure_env,
            log=tmp_path / "azure.log",
            cwd=code,
        ),
        serve(model, tmp_path / "ours.log", "--scoring-script", str(code / "score.py"), env=env) as ours,
        ours.client() as mine,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as azure,
    ):
        yield mine, azure


def _body(resp: httpx.Response) -> Any:
    if resp.headers.get("content-type", "").startswith("application/json") and resp.content:
        return resp.json()
    return resp.content


def assert_same(mine: httpx.Response, azure: httpx.Response) -> None:
    """The same answer: status, media type, body (ours may add `error` beside Azure's `message`),
    x-ms-run-function-failed and, when sent, the echoed request ids."""
    where = f"{mine.request.method} {mine.request.url.path}?{mine.request.url.query.decode()}"
    assert mine.status_code == azure.status_code, (where, mine.text, azure.text)
    media = [r.headers.get("content-type", "").split(";")[0] for r in (mine, azure)]
    assert media[0] == media[1], (where, media)
    ours, theirs = _body(mine), _body(azure)
    if isinstance(ours, dict) and isinstance(theirs, dict) and "error" in ours and "error" not in theirs:
        assert ours["error"]["message"] == ours["message"], where
        ours = {k: v for k, v in ours.items() if k != "error"}
    assert ours == theirs, where
    for name in ("x-ms-run-function-failed", "x-ms-client-request-id"):
        assert mine.headers.get(name) == azure.headers.get(name), (where, name)
    assert ("x-ms-run-fn-exec-ms" in mine.headers) == ("x-ms-run-fn-exec-ms" in azure.headers), where
    if "x-request-id" in mine.request.headers:
        assert mine.headers["x-request-id"] == azure.headers["x-request-id"], where
        assert mine.headers["x-ms-request-id"] == azure.headers["x-ms-request-id"], where


def exchange(clients: tuple[httpx.Client, httpx.Client], method: str, url: str, **kwargs: Any) -> None:
    mine, azure = (client.request(method, url, **kwargs) for client in clients)
    assert_same(mine, azure)


def test_a_plain_run_answers_as_under_azmlinfsrv(tmp_path: Path) -> None:
    with both(PLAIN, tmp_path) as clients:
        exchange(clients, "POST", "/score", json={"a": 1, "b": [1.5, None, "x"]})
        exchange(clients, "POST", "/score", content=b'{"a": 1}', headers={"content-type": "text/plain"})
        exchange(clients, "POST", "/score", json={"explode": True})
        exchange(clients, "POST", "/score", json={"opaque": True})
        exchange(clients, "GET", "/score?a=1&b=[1,2]&c=x&c=y&d=null")
        exchange(clients, "GET", "/score")
        exchange(clients, "OPTIONS", "/score")
        exchange(clients, "GET", "/")
        ids = {"x-request-id": "r-1", "x-ms-client-request-id": "c-1"}
        exchange(clients, "POST", "/score", json={"a": 2}, headers=ids)
        # A deliberate difference: no body is our 400; azmlinfsrv calls run("") and answers a 500.
        mine, azure = (client.post("/score") for client in clients)
        assert (mine.status_code, azure.status_code) == (400, 500)


SLOW = """
import json
import time


def init():
    pass


def run(raw_data):
    time.sleep(json.loads(raw_data)["sleep_s"])
    return {"slept": True}
"""


def test_scoring_timeout_ms_answers_as_under_azmlinfsrv(tmp_path: Path) -> None:
    with both(SLOW, tmp_path, {"SCORING_TIMEOUT_MS": "300"}) as clients:
        exchange(clients, "POST", "/score", json={"sleep_s": 0.05})
        exchange(clients, "POST", "/score", json={"sleep_s": 1.0})  # 500 "Scoring timeout after 300 ms"


def test_run_with_request_headers_sees_the_same_headers(tmp_path: Path) -> None:
    with both(HEADERS, tmp_path) as clients:
        headers = {"x-custom": "c1", "x-multi": "m1", "user-agent": "side-by-side", **JSON}
        exchange(clients, "POST", "/score", content=b'{"x": 1}', headers=headers)
        exchange(clients, "GET", "/score?x=1", headers={"x-custom": "g", "user-agent": "side-by-side"})


def test_a_decorated_run_answers_as_under_azmlinfsrv(tmp_path: Path) -> None:
    with both(DECORATED, tmp_path) as clients:
        exchange(clients, "POST", "/score", json={"data": [[1, 2], [3, 4]], "scale": 3, "other": 1})
        exchange(clients, "POST", "/score", json={"data": [[1, 2]]})
        exchange(
            clients,
            "POST",
            "/score",
            content=b'{"data": [[1, 2]]}',
            headers={"content-type": "application/x+json"},
        )
        exchange(clients, "GET", "/score?data=[[5,5]]&scale=0.5")
        exchange(
            clients, "POST", "/score", content=b'{"data": [[1, 2]]}', headers={"content-type": "text/plain"}
        )
        exchange(clients, "POST", "/score", content=b'{"data": ', headers=JSON)
        exchange(clients, "POST", "/score", content=b"", headers=JSON)
        exchange(clients, "POST", "/score", json=[[1, 2]])
        exchange(clients, "POST", "/score", json={"scale": 2})
        exchange(clients, "GET", "/score")
        exchange(clients, "POST", "/score", json={"data": "not an array"})  # the decorator raises in run()


def test_a_rawhttp_run_answers_as_under_azmlinfsrv(tmp_path: Path) -> None:
    with both(RAWHTTP, tmp_path) as clients:
        binary = {"content-type": "application/octet-stream", "x-custom": "c1"}
        exchange(clients, "POST", "/score?x=1&x=2", content=b"\x00binary, not JSON", headers=binary)
        exchange(clients, "GET", "/score?q=hello+world")
        exchange(clients, "POST", "/score")
        exchange(clients, "GET", "/score?plain=1")
        exchange(clients, "POST", "/score?explode=1", content=b"{}")
        exchange(clients, "OPTIONS", "/score?busy=1")
        mine, azure = (client.post("/score?x=3", content=b"y") for client in clients)
        assert mine.headers["x-reply"] == azure.headers["x-reply"] == "r1"


def test_swagger_of_a_decorated_run_has_azures_schemas(tmp_path: Path) -> None:
    with both(DECORATED, tmp_path) as (mine, azure):
        ours = mine.get("/swagger.json").json()
        theirs = azure.get("/swagger.json?version=3").json()
    schemas = theirs["components"]["schemas"]
    request = ours["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    response = ours["paths"]["/score"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {k: v for k, v in request.items() if k != "required"} == schemas["ServiceInput"]
    assert request["required"] == ["data"]  # ours says what the server refuses to go without
    assert response == schemas["ServiceOutput"]
    json.dumps(ours)  # plain JSON


MIXED = """
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema


def init():
    pass


@input_schema("data", StandardPythonParameterType([1, "one"]))
def run(data):
    return data
"""


def swagger2_shape(doc: dict[str, Any]) -> dict[str, Any]:
    """A Swagger 2 document less its info (the service's name and version differ by design) and the
    `required` ours adds to ServiceInput (what the server refuses to go without)."""
    shape = {k: v for k, v in doc.items() if k != "info"}
    shape["definitions"] = {
        name: {k: v for k, v in schema.items() if k != "required"}
        for name, schema in doc["definitions"].items()
    }
    return shape


@pytest.mark.parametrize("script", [PLAIN, DECORATED], ids=["plain", "decorated"])
def test_swagger_versions_as_under_azmlinfsrv(tmp_path: Path, script: str) -> None:
    with both(script, tmp_path) as clients:
        for alias in ("2", "2.0"):
            mine, azure = (client.get(f"/swagger.json?version={alias}") for client in clients)
            assert mine.status_code == azure.status_code == 200
            assert mine.json()["swagger"] == "2.0"
            assert swagger2_shape(mine.json()) == swagger2_shape(azure.json())
        mine, azure = (client.get("/swagger.json?version=3.1") for client in clients)
        assert mine.json()["openapi"] == azure.json()["openapi"] == "3.1.0"
        exchange(clients, "GET", "/swagger.json?version=7")
        exchange(clients, "GET", "/swagger.json?version=")
        # A deliberate difference: no version is our OpenAPI 3 document; azmlinfsrv's is Swagger 2.
        mine, azure = (client.get("/swagger.json") for client in clients)
        assert mine.json()["openapi"].startswith("3.") and azure.json()["swagger"] == "2.0"


def test_swagger_2_refused_when_the_decorators_cannot_say_it(tmp_path: Path) -> None:
    with both(MIXED, tmp_path) as clients:
        exchange(clients, "GET", "/swagger.json?version=2")
        mine, azure = (client.get("/swagger.json?version=3") for client in clients)
        assert mine.status_code == azure.status_code == 200


def test_a_swagger_file_beside_the_script_is_served_as_it_is(tmp_path: Path) -> None:
    own = {"swagger": "2.0", "info": {"title": "hand-written", "version": "9"}, "paths": {}}
    own3 = {"openapi": "3.0.1", "info": {"title": "hand-written 3", "version": "9"}, "paths": {}}
    files = {"swagger2.json": json.dumps(own), "swagger3.json": json.dumps(own3)}
    with both(PLAIN, tmp_path, beside=files) as clients:
        for alias in ("2", "3"):
            mine, azure = (client.get(f"/swagger.json?version={alias}") for client in clients)
            assert mine.json() == azure.json() == (own if alias == "2" else own3)
