"""`mlendpoints-serve` as a real process with the real fixture models: routes, errors, batching, workers."""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from tests.unit.serving.support import SCORING_SCRIPT, Server, save_behaving_model, serve

DIABETES_COLS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROWS = [
    [0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017],
    [-0.001, -0.044, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
]


@pytest.fixture(scope="module")
def servers(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    logs = tmp_path_factory.mktemp("serve-logs")
    behaving = save_behaving_model(tmp_path_factory.mktemp("behaving") / "model")
    with (
        serve(model_dirs["diabetes"], logs / "diabetes.log", "--max-body-bytes", "20000") as diabetes,
        serve(model_dirs["iris"], logs / "iris.log") as iris,
        serve(model_dirs["params"], logs / "params.log") as params,
        serve(model_dirs["tensor"], logs / "tensor.log", "--model-name", "summer") as tensor,
        serve(behaving, logs / "behaving.log", "--request-timeout-ms", "500") as behaving_server,
    ):
        yield {
            "diabetes": diabetes,
            "iris": iris,
            "params": params,
            "tensor": tensor,
            "behaving": behaving_server,
        }


@pytest.fixture(scope="module")
def pyfuncs(model_dirs: dict[str, Path]) -> dict[str, Any]:
    return {name: mlflow.pyfunc.load_model(str(path)) for name, path in model_dirs.items()}


def post(server: Server, path: str, body: Any, content_type: str = "application/json") -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    with server.client() as c:
        return c.post(path, content=data, headers={"content-type": content_type})


def assert_error(resp: Any, status: int, *fragments: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert set(err) == {"code", "message"}
    for fragment in fragments:
        assert fragment in err["message"], err["message"]


def assert_v2_error(resp: Any, status: int, *fragments: str) -> None:
    """The Open Inference Protocol's error form: {"error": <message string>} (and our code)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error", "code"} and isinstance(body["error"], str) and body["code"], body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


# -- /score -----------------------------------------------------------------------------------------
def test_score_split_dataframe(servers: dict[str, Server], pyfuncs: dict[str, Any]) -> None:
    resp = post(
        servers["diabetes"],
        "/score",
        {"input_data": {"columns": DIABETES_COLS, "index": [0, 1], "data": ROWS}},
    )
    assert resp.status_code == 200
    expected = pyfuncs["diabetes"].predict(pd.DataFrame(ROWS, columns=DIABETES_COLS)).tolist()
    assert resp.json() == expected


def test_score_named_columns_and_positional_rows(servers: dict[str, Server], pyfuncs: dict[str, Any]) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [7.7, 2.6, 6.9, 2.3]]
    cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    expected = pyfuncs["iris"].predict(pd.DataFrame(rows, columns=cols)).tolist()
    named = post(
        servers["iris"], "/score", {"input_data": {c: [r[i] for r in rows] for i, c in enumerate(cols)}}
    )
    positional = post(servers["iris"], "/score", {"input_data": rows})
    assert named.json() == positional.json() == expected
    assert expected == [0, 2]


def test_score_tensor_and_params(servers: dict[str, Server]) -> None:
    assert post(servers["tensor"], "/score", {"input_data": [[1, 2, 3, 4], [0.5, 0, 0, 0]]}).json() == [
        20.0,
        1.0,
    ]
    body = {
        "input_data": {"columns": ["a", "b"], "data": [[1.0, 2.0]]},
        "params": {"scale": 3.0, "offset": 1},
    }
    assert post(servers["params"], "/score", body).json() == [10.0]


# -- /invocations ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": DIABETES_COLS, "data": ROWS}},
        {"dataframe_records": [dict(zip(DIABETES_COLS, r, strict=True)) for r in ROWS]},
        {"instances": [dict(zip(DIABETES_COLS, r, strict=True)) for r in ROWS]},
        {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(DIABETES_COLS)}},
    ],
    ids=["split", "records", "instances", "inputs"],
)
def test_invocations_json_formats(servers: dict[str, Server], pyfuncs: dict[str, Any], body: Any) -> None:
    resp = post(servers["diabetes"], "/invocations", body)
    expected = pyfuncs["diabetes"].predict(pd.DataFrame(ROWS, columns=DIABETES_COLS)).tolist()
    assert resp.status_code == 200
    assert resp.json() == {"predictions": expected}


def test_invocations_csv(servers: dict[str, Server], pyfuncs: dict[str, Any]) -> None:
    frame = pd.DataFrame(ROWS, columns=DIABETES_COLS)
    resp = post(servers["diabetes"], "/invocations", frame.to_csv(index=False), "text/csv; charset=utf-8")
    assert resp.json() == {"predictions": pyfuncs["diabetes"].predict(frame).tolist()}


# -- Open Inference Protocol --------------------------------------------------------------------------
def test_v2_metadata_and_infer_for_a_dataframe_model(
    servers: dict[str, Server], pyfuncs: dict[str, Any]
) -> None:
    with servers["diabetes"].client() as c:
        meta = c.get("/v2/models/model").json()
        assert c.get("/v2/health/ready").status_code == c.get("/v2/health/live").status_code == 200
    assert [i["name"] for i in meta["inputs"]] == DIABETES_COLS
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    inputs = [
        {"name": c, "shape": [2], "datatype": "FP64", "data": [r[i] for r in ROWS]}
        for i, c in enumerate(DIABETES_COLS)
    ]
    resp = post(servers["diabetes"], "/v2/models/model/infer", {"id": "r1", "inputs": inputs})
    out = resp.json()
    assert out["id"] == "r1" and out["model_name"] == "model"
    expected = pyfuncs["diabetes"].predict(pd.DataFrame(ROWS, columns=DIABETES_COLS)).tolist()
    assert out["outputs"] == [{"name": "predictions", "shape": [2], "datatype": "FP64", "data": expected}]


def test_v2_infer_tensor_model(servers: dict[str, Server]) -> None:
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 1, 1, 1, 1]}]}
    out = post(servers["tensor"], "/v2/models/summer/infer", body).json()
    assert out["outputs"][0]["data"] == [20.0, 8.0]
    meta = servers["tensor"].client().get("/v2/models/summer").json()
    assert meta["inputs"] == [{"name": "tensor0", "datatype": "FP64", "shape": [-1, 4]}]
    assert_v2_error(
        post(
            servers["tensor"],
            "/v2/models/summer/infer",
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2]}]},
        ),
        400,
        "shape [2, 4] needs 8 values, got 2",
    )


# -- health, swagger, metrics --------------------------------------------------------------------------
def test_health_routes(servers: dict[str, Server]) -> None:
    with servers["iris"].client() as c:
        for path in ("/", "/ping", "/health"):
            assert c.get(path).status_code == 200


def test_swagger_is_openapi3_from_the_signature(servers: dict[str, Server]) -> None:
    doc = servers["diabetes"].client().get("/swagger.json").json()
    assert doc["openapi"].startswith("3.")
    score = doc["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    assert score["example"]["input_data"]["columns"] == DIABETES_COLS
    split = score["schema"]["properties"]["input_data"]["anyOf"][0]
    assert split["properties"]["columns"]["items"]["enum"] == DIABETES_COLS
    assert "/invocations" in doc["paths"]


def test_metrics_count_requests_latency_batches_and_load(servers: dict[str, Server]) -> None:
    server = servers["params"]
    body = {"input_data": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}
    for _ in range(3):
        post(server, "/score", body)
    post(server, "/score", "{nope")
    text = server.client().get("/metrics").text
    assert re.search(r'mlendpoints_requests_total\{route="/score",status="200"\} ([3-9]|\d\d)', text)
    assert re.search(r'mlendpoints_requests_total\{route="/score",status="400"\} [1-9]', text)
    assert 'mlendpoints_request_seconds_bucket{le="0.1",route="/score"}' in text
    assert re.search(r"mlendpoints_batch_rows_count [1-9]", text)
    assert re.search(r"mlendpoints_model_load_seconds [0-9.]+", text)
    assert "mlendpoints_requests_in_flight" in text


# -- client errors and model errors ----------------------------------------------------------------------
def test_signature_violations_are_400_naming_the_column(servers: dict[str, Server]) -> None:
    s = servers["diabetes"]
    assert_error(
        post(s, "/score", {"input_data": {"columns": DIABETES_COLS[:-1], "data": [ROWS[0][:-1]]}}),
        400,
        "missing column(s) ['s6']",
    )
    bad = [*ROWS[0][:2], "high", *ROWS[0][3:]]
    assert_error(
        post(s, "/score", {"input_data": {"columns": DIABETES_COLS, "data": [bad]}}),
        400,
        "column 'bmi'",
        "expected double",
        "string",
    )
    assert_error(
        post(s, "/invocations", {"dataframe_split": {"columns": DIABETES_COLS, "data": [bad]}}),
        400,
        "column 'bmi'",
    )
    assert_error(post(servers["tensor"], "/score", {"input_data": [[1, 2, 3]]}), 400, "shape [-1, 4]")


def test_malformed_json_wrong_type_and_size(servers: dict[str, Server]) -> None:
    s = servers["diabetes"]
    assert_error(post(s, "/score", b'{"input_data": [1,'), 400, "not valid JSON")
    assert_error(post(s, "/invocations", b"{}", "text/plain"), 415, "text/plain")
    assert_error(post(s, "/invocations", b"a,b", "text/csv; charset=latin-1"), 415, "UTF-8")
    assert_error(post(s, "/invocations", {"dataframe_split": {}, "inputs": []}), 400, "exactly one of")
    assert_error(post(s, "/score", {"data": []}), 400, "'input_data'")
    assert_error(post(s, "/score", b"x" * 30000), 413, "20000 bytes")
    with s.client() as c:
        assert_error(c.get("/nowhere"), 404, "/nowhere")
        assert_error(c.get("/score"), 405, "GET /score")


def test_model_exception_is_500_with_type_and_message(servers: dict[str, Server]) -> None:
    body = {"input_data": {"columns": ["x", "y"], "data": [[1.0, 2.0]]}, "params": {"fail": True}}
    assert_error(post(servers["behaving"], "/score", body), 500, "ValueError: the model refuses this input")
    log = servers["behaving"].log.read_text()
    assert "Traceback" in log  # the trace goes to the log, not to the client


def test_request_past_the_timeout_is_408_and_the_server_goes_on(servers: dict[str, Server]) -> None:
    s = servers["behaving"]
    slow = {"input_data": {"columns": ["x", "y"], "data": [[1.0, 2.0]]}, "params": {"sleep_s": 1.5}}
    assert_error(post(s, "/score", slow), 408, "500 ms")
    time.sleep(1.2)  # a predict() already running cannot be interrupted: let it finish
    fine = {"input_data": {"columns": ["x", "y"], "data": [[3.0, 2.0]]}}
    assert post(s, "/score", fine).json() == [1.0]


# -- batching ------------------------------------------------------------------------------------------
def batch_metrics(server: Server) -> tuple[float, float]:
    """(predict() calls, rows) so far, from /metrics."""
    text = server.client().get("/metrics").text
    count = re.search(r"mlendpoints_batch_rows_count (\S+)", text)
    total = re.search(r"mlendpoints_batch_rows_sum (\S+)", text)
    assert count and total, text
    return float(count.group(1)), float(total.group(1))


def test_batching_is_on_by_default_and_answers_like_pyfunc(
    model_dirs: dict[str, Path], pyfuncs: dict[str, Any], tmp_path: Path
) -> None:
    """No flags: a pyfunc with a column signature is batched (continuous: no window to wait for);
    concurrent requests share predict() calls and get what pyfunc.predict gives each."""
    rng = np.random.default_rng(7)
    frames = [rng.normal(size=(int(n), 2)).round(3) for n in rng.integers(1, 4, size=64)]
    bodies = [{"input_data": {"columns": ["a", "b"], "data": f.tolist()}} for f in frames]
    with serve(model_dirs["params"], tmp_path / "default.log") as batched:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda body: post(batched, "/score", body).json(), bodies))
        calls, rows = batch_metrics(batched)
    for frame, got in zip(frames, answers, strict=True):
        assert got == pyfuncs["params"].predict(pd.DataFrame(frame, columns=["a", "b"])).tolist()
    assert rows == sum(len(f) for f in frames)
    assert '"batching on"' in (tmp_path / "default.log").read_text()
    assert calls <= len(bodies)


def test_requests_that_arrive_while_the_model_predicts_go_as_one_batch(tmp_path: Path) -> None:
    """A model that takes 200 ms per call: 16 concurrent requests, batching by default, take a few
    calls (the first alone, the rest together); with --batching off, one call each."""
    model = save_behaving_model(tmp_path / "behaving")
    body = {"input_data": {"columns": ["x", "y"], "data": [[3.0, 1.0]]}, "params": {"sleep_s": 0.2}}

    def burst(server: Server) -> tuple[list[Any], float]:
        before, _ = batch_metrics(server)
        ready = threading.Barrier(16)

        def one(_: int) -> Any:
            with server.client() as client:  # connected first, then all send at once
                ready.wait()
                return client.post("/score", json=body).json()

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(16)))
        return answers, batch_metrics(server)[0] - before

    with (
        serve(model, tmp_path / "on.log") as on,
        serve(model, tmp_path / "off.log", "--batching", "off") as off,
    ):
        post(on, "/score", body), post(off, "/score", body)  # warm: the metric exists
        batched, calls_on = burst(on)
        unbatched, calls_off = burst(off)
    assert batched == unbatched == [[2.0]] * 16
    assert calls_off == 16
    assert calls_on <= 4  # in practice 2: one alone, then the 15 that queued meanwhile


def test_a_scoring_script_is_never_batched(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text(SCORING_SCRIPT)
    with (
        serve(
            model_dirs["diabetes"],
            tmp_path / "script.log",
            "--scoring-script",
            str(script),
            "--batching",
            "on",
        ) as s,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        sums = list(pool.map(lambda n: post(s, "/score", {"values": [n]}).json()["sum"], range(16)))
    assert sums == list(range(16))
    assert '"batching on"' not in (tmp_path / "script.log").read_text()


# -- workers, scoring script, start-up failures ---------------------------------------------------
def test_two_workers_each_load_the_model_and_metrics_aggregate(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": ""}
    with serve(
        model_dirs["tensor"], tmp_path / "w2.log", "--workers", "2", "--metrics-dir", str(tmp_path), env=env
    ) as s:
        # Ready means every worker has loaded: from then on no request meets a loading worker.
        for _ in range(20):
            assert post(s, "/score", {"input_data": [[1, 1, 1, 1]]}).json() == [8.0]
        # Each worker adds its requests to the shared metrics a second after them (metrics.RequestStats),
        # the one answering the scrape at once: all 20 are counted within about a second.
        total = r'mlendpoints_requests_total\{route="/score",status="200"\} 20\.0'
        deadline = time.monotonic() + 5
        while not re.search(total, metrics := s.client().get("/metrics").text):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        log = (tmp_path / "w2.log").read_text()
    assert log.count('"model loaded"') == 2
    assert re.search(total, metrics), metrics


def test_scoring_script_runs_init_once_per_worker(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text(SCORING_SCRIPT)
    with serve(model_dirs["diabetes"], tmp_path / "script.log", "--scoring-script", str(script)) as s:
        first = post(s, "/score", {"values": [1, 2, 3.5]}).json()
        post(s, "/score", {"values": []})
        again = post(s, "/score", {"values": [1]}).json()
        ok = post(s, "/score", {"values": [2]})
        exploded = post(s, "/score", {"explode": True})
        opaque = post(s, "/score", {"opaque": True})
        assert_error(post(s, "/invocations", {"inputs": [1]}), 404, "runs a scoring script")
    assert first == {"sum": 6.5, "inits": 1, "model_dir": str(model_dirs["diabetes"]), "same_dir": True}
    assert again["inits"] == 1
    assert ok.headers["x-ms-run-function-failed"] == "False"
    # As azmlinfsrv: how long run() took, in ms with three decimals, on what it returned.
    assert re.fullmatch(r"\d+\.\d{3}", ok.headers["x-ms-run-fn-exec-ms"]), ok.headers
    # run() raised: azmlinfsrv's generic answer and header; the exception's text stays in the log.
    assert exploded.status_code == 500
    assert exploded.headers["x-ms-run-function-failed"] == "True"
    assert "x-ms-run-fn-exec-ms" not in exploded.headers
    assert exploded.json() == {
        "message": "An unexpected error occurred in scoring script. Check the logs for more info.",
        "error": {
            "code": "script_error",
            "message": "An unexpected error occurred in scoring script. Check the logs for more info.",
        },
    }
    assert "secret-in-message" not in exploded.text and "RuntimeError" not in exploded.text
    # A return value that is not JSON: azmlinfsrv's internal-error answer, run() itself did not fail.
    assert opaque.status_code == 500
    assert opaque.headers["x-ms-run-function-failed"] == "False"
    assert opaque.json()["message"] == "An unexpected internal error occurred. Check the logs for more info."
    assert "object" not in opaque.text
    log = (tmp_path / "script.log").read_text()
    failure = next(json.loads(line) for line in log.splitlines() if "run() raised" in line)
    assert "RuntimeError: script exploded on purpose: secret-in-message" in json.dumps(failure)
    assert "Traceback" in json.dumps(failure) and "line " in json.dumps(failure)
    assert "returned a value that is not JSON" in log and "not JSON serializable: object" in log


def test_scoring_script_answers_azmlinfsrvs_request_id_headers(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "score.py"
    script.write_text(SCORING_SCRIPT)
    body = json.dumps({"values": [1]})
    with (
        serve(model_dirs["diabetes"], tmp_path / "ids.log", "--scoring-script", str(script)) as s,
        s.client() as c,
    ):
        none = c.post("/score", content=body)
        mine = c.post("/score", content=body, headers={"x-request-id": "r-1"})
        client = c.post("/score", content=body, headers={"x-ms-client-request-id": "c-1"})
        legacy = c.post("/score", content=body, headers={"x-ms-request-id": "l-1", "x-request-id": "r-2"})
        failed = c.post("/score", content=json.dumps({"explode": True}), headers={"x-request-id": "r-3"})
        live = c.get("/", headers={"x-request-id": "r-4"})
        options = c.options("/score")
        too_long = c.post("/score", content=body, headers={"x-request-id": "x" * 101})
        client_too_long = c.post("/score", content=body, headers={"x-ms-client-request-id": "c" * 101})
    assert none.status_code == 200
    generated = none.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", generated)
    assert none.headers["x-ms-request-id"] == generated and "x-ms-client-request-id" not in none.headers
    assert (mine.headers["x-request-id"], mine.headers["x-ms-request-id"]) == ("r-1", "r-1")
    assert client.headers["x-ms-client-request-id"] == client.headers["x-ms-request-id"] == "c-1"
    # The deprecated x-ms-request-id, sent alone, also stands for the client request id (azmlinfsrv).
    assert legacy.headers["x-request-id"] == "r-2"
    assert legacy.headers["x-ms-request-id"] == legacy.headers["x-ms-client-request-id"] == "l-1"
    assert failed.status_code == 500 and failed.headers["x-request-id"] == "r-3"
    assert live.headers["x-request-id"] == "r-4"  # every route, whatever its status
    assert (live.status_code, live.text, live.headers["content-type"]) == (
        200,
        "Healthy",
        "text/html; charset=utf-8",
    )  # azmlinfsrv's GET /
    assert (options.status_code, options.content, options.headers["x-ms-run-function-failed"]) == (
        200,
        b"",
        "False",
    )  # azmlinfsrv's OPTIONS /score without CORS origins
    assert_error(too_long, 431, "x-request-id must not exceed 100 characters")
    assert "x-request-id" not in too_long.headers
    assert_error(client_too_long, 431, "x-ms-client-request-id must not exceed 100 characters")


ECHO_SCRIPT = """
def init():
    pass


def run(raw_data):
    return {"raw": raw_data}
"""

HEADERS_SCRIPT = """
def init():
    pass


def run(request_headers, data):  # azmlinfsrv passes both by name, whatever their order
    return {"data": data, "headers": request_headers}
"""


def test_scoring_script_get_score_passes_the_query_as_json(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "score.py"
    script.write_text(ECHO_SCRIPT)
    query = "a=1&b=[1,2]&c=a&d=null&foo=bar1&foo=bar2&e=&s=%22x%22&t=hello+world&n=%7B%22k%22%3A%201.5%7D&f"
    with (
        serve(model_dirs["diabetes"], tmp_path / "get.log", "--scoring-script", str(script)) as s,
        s.client() as c,
    ):
        got = c.get(f"/score?{query}", headers={"x-request-id": "g-1"})
        bare = c.get("/score")
        posted = c.post("/score", content='{"a": 1}')
        not_utf8 = c.get("/score?a=%FF")
        deep = c.get("/score?a=" + "[" * 20_000)
    assert got.status_code == 200, got.text
    assert got.headers["x-ms-run-function-failed"] == "False" and got.headers["x-request-id"] == "g-1"
    # Exactly the string azmlinfsrv 1.5.1 gives run(): json.dumps of the decoded parameters, in order.
    assert got.json()["raw"] == (
        '{"a": 1, "b": [1, 2], "c": "a", "d": null, "foo": ["bar1", "bar2"], "e": "", "s": "x", '
        '"t": "hello world", "n": {"k": 1.5}, "f": ""}'
    )
    assert bare.json() == {"raw": "{}"}
    assert posted.json() == {"raw": '{"a": 1}'}  # POST still gives the body as it came
    assert_error(not_utf8, 400, "query string is not UTF-8")
    assert_error(deep, 400, "query parameter 'a' nests too deeply")


def test_scoring_script_run_gets_request_headers_as_azmlinfsrv(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "score.py"
    script.write_text(HEADERS_SCRIPT)
    with (
        serve(model_dirs["diabetes"], tmp_path / "headers.log", "--scoring-script", str(script)) as s,
        s.client() as c,
    ):
        posted = c.post(
            "/score",
            content='{"v": 1}',
            headers=[
                ("content-type", "application/json"),
                ("X-Custom-Thing", "v1"),
                ("x-dup", "a"),
                ("x-dup", "b"),
                ("x_under", "dropped"),
                ("x-ms-client-request-id", "c-9"),
            ],
        )
        got = c.get("/score?x=1", headers={"accept": "application/json"})
    assert posted.status_code == 200, posted.text
    body = posted.json()
    assert body["data"] == '{"v": 1}'
    headers = body["headers"]
    # dict(flask.request.headers) under gunicorn: Title-Cased names, repeated values joined by ",",
    # names with "_" dropped.
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Custom-Thing"] == "v1" and headers["X-Dup"] == "a,b"
    assert headers["X-Ms-Client-Request-Id"] == "c-9" and headers["Content-Length"] == "8"
    assert headers["Host"].startswith("127.0.0.1:")
    assert not any("_" in name or name.lower() == "x-under" for name in headers)
    assert all(name == name.title() for name in headers)
    assert got.json()["data"] == '{"x": 1}' and got.json()["headers"]["Accept"] == "application/json"


def test_a_run_with_only_request_headers_does_not_load(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    import subprocess

    from tests.unit.serving.support import BIN

    script = tmp_path / "score.py"
    script.write_text("def init():\n    pass\n\n\ndef run(request_headers):\n    return 1\n")
    termination = tmp_path / "termination-log"
    argv = [str(BIN / "mlendpoints-serve"), "--model-dir", str(model_dirs["diabetes"]), "--workers", "1"]
    proc = subprocess.run(
        [*argv, "--port", "0", "--scoring-script", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"MLENDPOINTS_TERMINATION_LOG": str(termination), "PATH": str(BIN)},
    )
    assert proc.returncode == 1
    # azmlinfsrv's own refusal (user_script._analyze_run)
    assert 'run() needs to accept an argument other than "request_headers".' in termination.read_text()


def test_scoring_script_cors_follows_aml_cors_origins_as_azmlinfsrv(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "score.py"
    script.write_text(ECHO_SCRIPT)
    origins = {"AML_CORS_ORIGINS": "https://b.example, https://a.example,https://.*\\.c\\.example"}
    body = '{"v": 1}'
    with (
        serve(model_dirs["diabetes"], tmp_path / "c.log", "--scoring-script", str(script), env=origins) as s,
        s.client() as c,
    ):
        allowed = c.post("/score", content=body, headers={"origin": "https://A.example"})
        by_regex = c.get("/score?x=1", headers={"origin": "https://api.c.example"})
        refused = c.post("/score", content=body, headers={"origin": "https://evil.example"})
        preflight = c.options(
            "/score",
            headers={
                "origin": "https://a.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "X-Custom, content-type",
            },
        )
        no_origin = c.get("/")
        health = c.get("/health", headers={"origin": "https://a.example"})
    assert allowed.status_code == 200 and allowed.json() == {"raw": body}
    # flask-cors, as azmlinfsrv configures it: the request's origin echoed; Vary as there are several.
    assert allowed.headers["access-control-allow-origin"] == "https://A.example"
    assert allowed.headers["vary"] == "Origin"
    assert by_regex.headers["access-control-allow-origin"] == "https://api.c.example"
    assert refused.status_code == 200 and "access-control-allow-origin" not in refused.headers
    assert (preflight.status_code, preflight.content) == (200, b"")
    assert preflight.headers["access-control-allow-origin"] == "https://a.example"
    assert preflight.headers["access-control-allow-methods"] == "GET, POST"
    assert preflight.headers["access-control-allow-headers"] == "X-Custom, content-type"
    assert "access-control-allow-methods" not in allowed.headers  # only on a preflight
    # No Origin: flask-cors still sends the first literal origin (sorted), as azmlinfsrv answers.
    assert (
        no_origin.text == "Healthy"
        and no_origin.headers["access-control-allow-origin"] == "https://a.example"
    )
    assert "access-control-allow-origin" not in health.headers  # not a route azmlinfsrv has

    import subprocess

    from tests.unit.serving.support import BIN

    termination = tmp_path / "termination-log"
    argv = [str(BIN / "mlendpoints-serve"), "--model-dir", str(model_dirs["diabetes"]), "--workers", "1"]
    proc = subprocess.run(
        [*argv, "--port", "0", "--scoring-script", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "MLENDPOINTS_TERMINATION_LOG": str(termination),
            "PATH": str(BIN),
            "AML_CORS_ORIGINS": "https://a.example,https://[",
        },
    )
    assert proc.returncode == 1  # flask-cors refuses a bad pattern at start-up too
    assert "'https://[' in AML_CORS_ORIGINS is not a valid regular expression" in termination.read_text()


def test_an_mlflow_model_answers_no_azure_request_id_headers(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    with serve(model_dirs["tensor"], tmp_path / "m.log", env={"AML_CORS_ORIGINS": "*"}) as s:
        resp = post(s, "/score", {"input_data": [[1, 1, 1, 1]]})
        live = s.client().get("/")
        options = s.client().options("/score")
        get = s.client().get("/score?data=1")
    assert resp.status_code == 200
    assert options.status_code == 405 and options.headers["allow"] == "POST", options.text
    assert get.status_code == 405 and get.headers["allow"] == "POST", get.text  # azmlinfsrv's GET: scripts
    assert "x-ms-request-id" not in resp.headers and "x-ms-run-function-failed" not in resp.headers
    assert "access-control-allow-origin" not in resp.headers  # CORS: scoring scripts only
    assert live.json() == {"status": "alive"}


def test_a_directory_without_a_model_fails_with_a_termination_message(tmp_path: Path) -> None:
    import subprocess

    from tests.unit.serving.support import BIN

    termination = tmp_path / "termination-log"
    proc = subprocess.run(
        [str(BIN / "mlendpoints-serve"), "--model-dir", str(tmp_path), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MLENDPOINTS_TERMINATION_LOG": str(termination), "PATH": str(BIN)},
    )
    assert proc.returncode != 0
    assert "is not an MLflow model directory" in termination.read_text()


def test_a_model_that_fails_to_load_stops_the_worker_with_the_reason(
    diabetes_model: Path, tmp_path: Path
) -> None:
    import subprocess

    from tests.unit.serving.support import BIN

    broken = tmp_path / "broken"
    shutil.copytree(diabetes_model, broken)
    (broken / "model.skops").write_bytes(b"not a model")
    termination = tmp_path / "termination-log"
    proc = subprocess.run(
        [str(BIN / "mlendpoints-serve"), "--model-dir", str(broken), "--workers", "1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"MLENDPOINTS_TERMINATION_LOG": str(termination), "PATH": str(BIN)},
    )
    assert proc.returncode == 1
    assert termination.read_text().startswith(f"mlendpoints-serve failed: cannot load {broken}")


TIMED_SCRIPT = """
import json
import time


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("raise_timeout"):
        raise TimeoutError("the script's own timeout, not the server's")
    time.sleep(data.get("sleep_s", 0))
    return {"slept": data.get("sleep_s", 0)}
"""


def test_scoring_timeout_ms_answers_azmlinfsrvs_500_and_times_run(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "score.py"
    script.write_text(TIMED_SCRIPT)
    env = {"SCORING_TIMEOUT_MS": "400"}
    with serve(model_dirs["diabetes"], tmp_path / "timed.log", "--scoring-script", str(script), env=env) as s:
        timed = post(s, "/score", {"sleep_s": 0.2})
        started = time.monotonic()
        late = post(s, "/score", {"sleep_s": 1.5})
        answered_s = time.monotonic() - started
        own = post(s, "/score", {"raise_timeout": True})  # run()'s own TimeoutError is run() failing
        time.sleep(1.5)  # the late run() goes on in its thread to its end; then the server is free again
        after = post(s, "/score", {"sleep_s": 0})
    assert timed.json() == {"slept": 0.2}
    assert 200.0 <= float(timed.headers["x-ms-run-fn-exec-ms"]) < 400.0, timed.headers
    assert late.status_code == 500 and answered_s < 1.2, (late.status_code, answered_s)
    assert late.json()["message"] == "Scoring timeout after 400 ms"
    assert late.json()["error"]["code"] == "scoring_timeout"
    assert late.headers["x-ms-run-function-failed"] == "True" and "x-ms-run-fn-exec-ms" not in late.headers
    assert own.status_code == 500 and own.json()["error"]["code"] == "script_error"
    assert after.json() == {"slept": 0} and float(after.headers["x-ms-run-fn-exec-ms"]) < 400.0
    assert "run() ran past SCORING_TIMEOUT_MS" in (tmp_path / "timed.log").read_text()


def test_a_bad_scoring_timeout_stops_the_server_with_the_reason(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import subprocess

    from tests.unit.serving.support import BIN

    script = tmp_path / "score.py"
    script.write_text(TIMED_SCRIPT)
    termination = tmp_path / "termination-log"
    proc = subprocess.run(
        [BIN / "mlendpoints-serve", "--model-dir", model_dirs["diabetes"], "--scoring-script", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MLENDPOINTS_TERMINATION_LOG": str(termination), "PATH": str(BIN), "SCORING_TIMEOUT_MS": "5s"},
    )
    assert proc.returncode != 0
    message = termination.read_text()
    assert "SCORING_TIMEOUT_MS must be a positive whole number of milliseconds, got '5s'" in message


SCHEMA_SCRIPT = """
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@input_schema("scale", StandardPythonParameterType(2.0))
@output_schema(StandardPythonParameterType({"sums": [3.0]}))
def run(data, request_headers, scale=1.0):
    return {
        "sums": (data.sum(axis=1) * scale).tolist(),
        "data_type": type(data).__name__,
        "custom": request_headers.get("X-Custom"),
    }
"""


def test_a_run_decorated_with_inference_schema_gets_its_arguments_by_name(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """azmlinfsrv's ObjectInput: the body is a JSON object whose keys are run()'s arguments, each turned
    into its declared type by the decorators; its own 415/400 wording otherwise; the schemas in swagger."""
    script = tmp_path / "score.py"
    script.write_text(SCHEMA_SCRIPT)
    with (
        serve(model_dirs["diabetes"], tmp_path / "schema.log", "--scoring-script", str(script)) as s,
        s.client() as c,
    ):
        scaled = c.post(
            "/score", json={"data": [[1, 2], [3, 4]], "scale": 3, "other": 1}, headers={"x-custom": "c"}
        )
        default = c.post(
            "/score", content=b'{"data": [[1, 2]]}', headers={"content-type": "application/vnd.x+json"}
        )
        got = c.get("/score", params={"data": "[[5, 5]]", "scale": "0.5"})
        text = c.post("/score", content=b'{"data": [[1, 2]]}', headers={"content-type": "text/plain"})
        broken = c.post("/score", content=b'{"data": ', headers={"content-type": "application/json"})
        empty = c.post("/score", content=b"", headers={"content-type": "application/json"})
        listed = c.post("/score", json=[[1, 2]])
        missing = c.post("/score", json={"scale": 2})
        missing_get = c.get("/score")
        swagger = c.get("/swagger.json").json()
    assert scaled.status_code == 200, scaled.text
    assert scaled.json() == {"sums": [9.0, 21.0], "data_type": "ndarray", "custom": "c"}
    assert re.fullmatch(r"\d+\.\d{3}", scaled.headers["x-ms-run-fn-exec-ms"])
    assert default.json()["sums"] == [3.0]  # scale's default; application/*+json is JSON, as werkzeug says
    assert got.json()["sums"] == [5.0]
    expected = {
        text: (415, "Expects Content-Type to be application/json"),
        broken: (400, "POST body could not be decoded as JSON: Expecting value: line 1 column 10 (char 9)"),
        empty: (400, "POST body is empty. Expecting a JSON dictionary."),
        listed: (400, "POST body should be a JSON dictionary."),
        missing: (400, "A value is not provided for the 'data' parameter."),
        missing_get: (400, "A value is not provided for the 'data' parameter."),
    }
    for resp, (status, message) in expected.items():
        assert (resp.status_code, resp.json()["message"]) == (status, message), resp.text
        assert resp.json()["error"]["message"] == message
    request = swagger["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request["properties"]["data"]["format"] == "numpy.ndarray" and request["required"] == ["data"]
    assert request["example"] == {"data": [[1.0, 2.0]], "scale": 2.0}
    ok = swagger["paths"]["/score"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["properties"]["sums"]["type"] == "array"


def test_a_run_both_rawhttp_and_decorated_does_not_load(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text(
        SCHEMA_SCRIPT.replace(
            "def init", "from azureml.contrib.services.aml_request import rawhttp\n\n\ndef init"
        ).replace("def run(", "@rawhttp\ndef run(")
    )
    import subprocess

    from tests.unit.serving.support import BIN

    termination = tmp_path / "termination-log"
    args = [
        BIN / "mlendpoints-serve",
        "--model-dir",
        model_dirs["diabetes"],
        "--scoring-script",
        script,
        "--port",
        "0",
    ]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        env={"MLENDPOINTS_TERMINATION_LOG": str(termination), "PATH": str(BIN)},
    )
    assert proc.returncode != 0
    message = termination.read_text()
    assert "run() cannot be decorated with both @rawhttp and @input_schema" in message, proc.stderr[-3000:]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stuck_prediction_restarts_the_worker_and_a_slow_one_does_not(
    model_dirs: dict[str, Path], tmp_path: Path, workers: str
) -> None:
    termination = tmp_path / "termination-log"
    behaving = save_behaving_model(tmp_path / "behaving")
    args = ("--request-timeout-ms", "400", "--stuck-after-s", "2", "--workers", workers)
    env = {"MLENDPOINTS_TERMINATION_LOG": str(termination)}
    with serve(behaving, tmp_path / "stuck.log", *args, env=env) as s:
        proc = s.process
        assert proc is not None
        rows = {"columns": ["x", "y"], "data": [[3.0, 2.0]]}
        # Past the request timeout but under the stuck limit: a 408, and the worker goes on.
        assert_error(post(s, "/score", {"input_data": rows, "params": {"sleep_s": 1.0}}), 408, "400 ms")
        time.sleep(1.5)
        assert proc.poll() is None
        assert post(s, "/score", {"input_data": rows}).json() == [1.0]
        # A prediction that hangs: the worker reports it and exits, so that the pod restarts.
        assert_error(post(s, "/score", {"input_data": rows, "params": {"sleep_s": 600}}), 408, "400 ms")
        proc.wait(timeout=20)
    assert proc.returncode == 1
    message = termination.read_text()
    assert message.startswith("mlendpoints-serve failed: a prediction has been running for"), message
    assert "stuck (limit 2 s: --stuck-after-s" in message


RAWHTTP_SCRIPT = """
import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    assert isinstance(request, AMLRequest)
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
        "content_type": request.headers.get("Content-Type"),
    }
    return AMLResponse(json.dumps(seen), 201, {"Content-Type": "application/json", "X-Reply": "r1, r2"})
"""


def test_a_rawhttp_run_gets_the_request_and_answers_an_amlresponse(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "score.py"
    script.write_text(RAWHTTP_SCRIPT)
    with (
        serve(model_dirs["diabetes"], tmp_path / "raw.log", "--scoring-script", str(script)) as s,
        s.client() as c,
    ):
        posted = c.post(
            "/score?x=1&x=2",
            content=b"\x00binary, not JSON",
            headers={"content-type": "application/octet-stream", "x-custom": "c1", "x-request-id": "r-7"},
        )
        got = c.get("/score?q=hello+world")
        empty = c.post("/score")
        plain = c.get("/score?plain=1")
        exploded = c.post("/score?explode=1", content=b"{}")
        busy = c.options("/score?busy=1")
    assert posted.status_code == 201, posted.text
    assert posted.headers["content-type"] == "application/json"
    assert posted.headers.get_list("x-reply") == ["r1", "r2"]  # azmlinfsrv splits a value on ","
    assert posted.headers["x-ms-run-function-failed"] == "False" and posted.headers["x-request-id"] == "r-7"
    assert posted.json() == {
        "method": "POST",
        "args": {"x": ["1", "2"]},
        "body": "\x00binary, not JSON",
        "full_path": "/score?x=1&x=2",
        "custom": "c1",
        "content_type": "application/octet-stream",
    }
    assert got.status_code == 201
    assert got.json()["method"] == "GET" and got.json()["args"] == {"q": ["hello world"]}
    assert empty.status_code == 201 and empty.json()["body"] == ""  # run() decides about a bodiless POST
    # Any other return value: JSON, as a plain run()'s.
    assert plain.status_code == 200 and plain.json() == {"plain": True, "method": "GET"}
    assert plain.headers["x-ms-run-function-failed"] == "False"
    # A raising rawhttp run(): the same generic 500 as a plain run(), the text only in the log.
    assert exploded.status_code == 500
    assert exploded.headers["x-ms-run-function-failed"] == "True"
    assert exploded.json()["message"] == (
        "An unexpected error occurred in scoring script. Check the logs for more info."
    )
    assert exploded.json()["error"]["code"] == "script_error" and "secret" not in exploded.text
    assert "rawhttp exploded: secret-in-message" in (tmp_path / "raw.log").read_text()
    # OPTIONS reaches run() too; a 5xx it answers is marked as run()'s failure, as azmlinfsrv; None: {}.
    assert busy.status_code == 503 and busy.json() == {}
    assert busy.headers.get_list("x-ms-run-function-failed") == ["True"]
    # Whatever run() returned, its time rides along, as azmlinfsrv's; not when it raised.
    for answered in (posted, got, plain, busy):
        assert re.fullmatch(r"\d+\.\d{3}", answered.headers["x-ms-run-fn-exec-ms"]), answered.headers
    assert "x-ms-run-fn-exec-ms" not in exploded.headers
