"""The Open Inference Protocol (V2) as a real client uses it: NVIDIA's `tritonclient[http]`, real servers.

Every V2 route: server live/ready/metadata, model metadata and readiness, infer with named
inputs (JSON and binary tensor data), selected outputs (JSON and binary), protocol
parameters beside MLflow params, and errors (the client's exception carries our message).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.unit.serving.support import SCORING_SCRIPT, Server, serve

pytestmark = pytest.mark.slow

DIABETES_COLS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROWS = np.array(
    [
        [0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017],
        [-0.001, -0.044, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
        [0.1, -0.04, 0.2, 0.0, 1.0, 2.0, 3.0, -0.5, 0.25, 7.0],
    ]
)


@pytest.fixture(scope="module")
def servers(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    logs = tmp_path_factory.mktemp("v2")
    script = logs / "score.py"
    script.write_text(SCORING_SCRIPT)
    with (
        serve(model_dirs["diabetes"], logs / "diabetes.log", "--max-batch-size", "8") as diabetes,
        serve(model_dirs["params"], logs / "params.log") as params,
        serve(model_dirs["tensor"], logs / "tensor.log", "--model-name", "summer") as tensor,
        serve(model_dirs["diabetes"], logs / "script.log", "--scoring-script", str(script)) as scripted,
    ):
        yield {"diabetes": diabetes, "params": params, "tensor": tensor, "script": scripted}


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=30.0)


def column_inputs(
    rows: np.ndarray[Any, Any], binary: bool, shape_2d: bool = False
) -> list[triton.InferInput]:
    inputs = []
    for i, name in enumerate(DIABETES_COLS):
        column = rows[:, i : i + 1] if shape_2d else rows[:, i]
        tensor = triton.InferInput(name, list(column.shape), "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(column), binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.fixture(scope="module")
def expected(model_dirs: dict[str, Path]) -> np.ndarray[Any, Any]:
    model = mlflow.pyfunc.load_model(str(model_dirs["diabetes"]))
    return np.asarray(model.predict(pd.DataFrame(ROWS, columns=DIABETES_COLS)))


def test_health_and_server_metadata(servers: dict[str, Server]) -> None:
    for server in servers.values():
        c = client(server)
        assert c.is_server_live() and c.is_server_ready()
    meta = client(servers["diabetes"]).get_server_metadata()
    assert meta["name"] == "mlendpoints"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(servers: dict[str, Server]) -> None:
    c = client(servers["diabetes"])
    assert c.is_model_ready("model")
    assert not c.is_model_ready("other")
    meta = c.get_model_metadata("model")
    assert [i["name"] for i in meta["inputs"]] == DIABETES_COLS
    assert {(i["datatype"], tuple(i["shape"])) for i in meta["inputs"]} == {("FP64", (-1,))}
    assert meta["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
    tensor = client(servers["tensor"]).get_model_metadata("summer")
    assert tensor["inputs"] == [{"name": "tensor0", "datatype": "FP64", "shape": [-1, 4]}]
    assert tensor["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
    with pytest.raises(InferenceServerException, match="serves the model 'model'"):
        c.get_model_metadata("other")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("shape_2d", [False, True], ids=["[n]", "[n,1]"])
def test_infer_named_inputs_equals_pyfunc(
    servers: dict[str, Server], expected: np.ndarray[Any, Any], binary: bool, shape_2d: bool
) -> None:
    # No outputs asked: tritonclient asks for all of them in binary (binary_data_output).
    result = client(servers["diabetes"]).infer(
        "model", column_inputs(ROWS, binary, shape_2d), request_id="r7"
    )
    response = result.get_response()
    assert response["id"] == "r7" and response["model_name"] == "model"
    assert [o["name"] for o in response["outputs"]] == ["predictions"]
    assert "binary_data_size" in response["outputs"][0]["parameters"]
    np.testing.assert_array_equal(result.as_numpy("predictions"), expected)


def test_output_names_are_the_metadata_names(servers: dict[str, Server]) -> None:
    for server, name, inputs in [
        (servers["diabetes"], "model", column_inputs(ROWS[:1], binary=False)),
        (servers["tensor"], "summer", [_tensor_input(np.ones((1, 4)), binary=False)]),
    ]:
        c = client(server)
        declared = [o["name"] for o in c.get_model_metadata(name)["outputs"]]
        returned = [o["name"] for o in c.infer(name, inputs).get_response()["outputs"]]
        assert returned == declared


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_selected_outputs(servers: dict[str, Server], expected: np.ndarray[Any, Any], binary: bool) -> None:
    c = client(servers["diabetes"])
    asked = [triton.InferRequestedOutput("predictions", binary_data=binary)]
    result = c.infer("model", column_inputs(ROWS, binary=True), outputs=asked)
    output = result.get_output("predictions")
    assert ("data" in output) is not binary
    np.testing.assert_array_equal(result.as_numpy("predictions"), expected)
    # An output the model does not have is the client's mistake, not an empty reply.
    with pytest.raises(InferenceServerException, match="no output 'tensor0'") as exc:
        c.infer("model", column_inputs(ROWS, binary=True), outputs=[triton.InferRequestedOutput("tensor0")])
    assert exc.value.status() == "400"


def _tensor_input(values: np.ndarray[Any, Any], binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("x", list(values.shape), "FP64")
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_tensor_model(servers: dict[str, Server], binary: bool) -> None:
    values = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    result = client(servers["tensor"]).infer("summer", [_tensor_input(values, binary)])
    np.testing.assert_array_equal(result.as_numpy("predictions"), [20.0, 8.0])


def test_protocol_parameters_are_not_model_params(servers: dict[str, Server]) -> None:
    def infer(server: Server, **kwargs: Any) -> Any:
        a = triton.InferInput("a", [2], "FP64")
        a.set_data_from_numpy(np.array([1.0, 2.0]))
        b = triton.InferInput("b", [2], "FP64")
        b.set_data_from_numpy(np.array([3.0, 4.0]))
        return client(server).infer("model", [a, b], **kwargs).as_numpy("predictions")

    # binary_data_output, priority and timeout belong to the protocol; scale is the model's own param.
    scaled = infer(servers["params"], priority=1, timeout=5_000_000, parameters={"scale": 2.0, "offset": 1.0})
    np.testing.assert_array_equal(scaled, [9.0, 13.0])
    np.testing.assert_array_equal(infer(servers["params"], priority=1), [4.0, 6.0])
    # A model without a params schema: the protocol's parameters are not "params ignored".
    client(servers["diabetes"]).infer("model", column_inputs(ROWS[:1], binary=True), priority=1)
    assert "params ignored" not in servers["diabetes"].log.read_text()


def test_errors_reach_the_client_with_our_message(servers: dict[str, Server]) -> None:
    c = client(servers["tensor"])
    with pytest.raises(InferenceServerException, match=r"expected float64 of shape \[-1, 4\]") as exc:
        c.infer("summer", [_tensor_input(np.ones((2, 3)), binary=True)])
    assert exc.value.status() == "400"
    text = triton.InferInput("x", [1, 4], "BYTES")
    text.set_data_from_numpy(np.array([[b"a", b"b", b"c", b"d"]], dtype=object))
    with pytest.raises(InferenceServerException, match="tensor") as exc:
        c.infer("summer", [text])
    assert exc.value.status() == "400"
    d = client(servers["diabetes"])
    with pytest.raises(InferenceServerException, match="missing column") as exc:
        d.infer("model", column_inputs(ROWS, binary=True)[:-1])
    assert exc.value.status() == "400"
    # Input the model cannot take (NaN here) is the client's mistake: a 400 that names it.
    with pytest.raises(InferenceServerException, match=r"column\(s\) \['bmi'\] have null/NaN") as exc:
        d.infer("model", column_inputs(np.where(np.arange(10) == 2, np.nan, ROWS[:1]), binary=True))
    assert exc.value.status() == "400"
    with pytest.raises(InferenceServerException, match="classification extension is not supported"):
        d.infer(
            "model",
            column_inputs(ROWS, True),
            outputs=[triton.InferRequestedOutput("predictions", class_count=2)],
        )
    with pytest.raises(InferenceServerException, match="Content-Encoding 'gzip' is not supported"):
        d.infer("model", column_inputs(ROWS, True), request_compression_algorithm="gzip")


def test_a_scoring_script_deployment_has_no_v2_model(servers: dict[str, Server]) -> None:
    c = client(servers["script"])
    assert c.is_server_ready()
    assert not c.is_model_ready("model")
    for call in (lambda: c.get_model_metadata("model"), lambda: c.infer("model", column_inputs(ROWS, True))):
        with pytest.raises(InferenceServerException, match="runs a scoring script") as exc:
            call()
        assert exc.value.status() == "404"
