"""The V2 codec against tritonclient's own encoders and decoders, with real fixture models (no HTTP).

The integration test drives the routes with the client; this one covers what the fixture
models cannot show over HTTP: BYTES tensors both ways, DataFrame outputs (one output per
column), every numeric datatype's binary layout, and malformed binary requests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from mlendpoints_serving.model import InputError, ServedModel, load
from mlendpoints_serving.model.schema import ColumnDecoder, ColumnSpec
from mlendpoints_serving.server.codecs import ClientError
from mlendpoints_serving.server.v2 import DATATYPES, Requested, V2Codec, _from_binary, _to_binary

HEADER = b"inference-header-content-length"


@pytest.fixture(scope="module")
def models(model_dirs: dict[str, Path]) -> dict[str, ServedModel]:
    return {name: load(path) for name, path in model_dirs.items()}


def request(inputs: list[triton.InferInput], **kwargs: Any) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers tritonclient sends for these inputs."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, **kwargs)
    return body, [] if json_size is None else [(HEADER, str(json_size).encode())]


@pytest.mark.parametrize("datatype", sorted(set(DATATYPES) - {"BYTES"}))
def test_numeric_binary_layout_is_tritons(datatype: str) -> None:
    values = np.arange(6).reshape(2, 3).astype(DATATYPES[datatype])
    tensor = triton.InferInput("x", [2, 3], datatype)
    tensor.set_data_from_numpy(values, binary_data=True)
    raw = tensor._get_binary_data()
    assert _to_binary(values, datatype) == raw
    np.testing.assert_array_equal(_from_binary(memoryview(raw), datatype, "x", 0), values.ravel())


def test_bytes_tensors_both_ways() -> None:
    values = np.array(["a", "ünï", "", "x" * 300], dtype=object)
    raw = serialize_byte_tensor(values).item()
    assert _from_binary(memoryview(raw), "BYTES", "s", 0) == list(values)
    decoded = deserialize_bytes_tensor(_to_binary(values, "BYTES"))
    assert [v.decode() for v in decoded] == list(values)
    with pytest.raises(InputError, match="runs past the data"):
        _from_binary(memoryview(raw[:-1]), "BYTES", "s", 0)
    with pytest.raises(InputError, match="not UTF-8"):
        _from_binary(memoryview(b"\x02\x00\x00\x00\xff\xfe"), "BYTES", "s", 0)


def test_a_dataframe_output_is_one_output_per_column_readable_by_the_client(
    models: dict[str, ServedModel],
) -> None:
    codec = V2Codec("model")
    frame = pd.DataFrame({"label": ["setosa", "virginica"], "score": [0.9, 0.75]})
    content_type, body, header_length = codec.encode(models["iris"], frame, Requested("r", None, True))
    assert content_type == b"application/octet-stream" and header_length is not None
    result = triton.InferResult.from_response_body(body, header_length=header_length)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label", "score"]
    assert [v.decode() for v in result.as_numpy("label")] == ["setosa", "virginica"]
    np.testing.assert_array_equal(result.as_numpy("score"), [0.9, 0.75])
    # Asked by name, in the order asked, one as JSON: only those, as asked.
    _, body, header_length = codec.encode(
        models["iris"], frame, Requested(None, [("score", False), ("label", True)], False)
    )
    result = triton.InferResult.from_response_body(body, header_length=header_length)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["score", "label"]
    assert result.get_output("score")["data"] == [0.9, 0.75]
    with pytest.raises(ClientError, match=r"produced no output \['proba'\]"):
        codec.encode(models["iris"], frame, Requested(None, [("proba", False)], False))


def test_binary_request_errors_name_the_problem(models: dict[str, ServedModel]) -> None:
    codec = V2Codec("summer")
    tensor = triton.InferInput("x", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.ones((1, 4)), binary_data=True)
    body, headers = request([tensor])
    inp, _ = codec.decode(models["tensor"], body, None, headers)
    np.testing.assert_array_equal(inp.data, np.ones((1, 4)))
    with pytest.raises(ClientError, match="runs past the body"):
        codec.decode(models["tensor"], body[:-8], None, headers)
    with pytest.raises(ClientError, match="no input's binary_data_size accounts for"):
        codec.decode(models["tensor"], body + b"\x00" * 8, None, headers)
    with pytest.raises(ClientError, match="must be the length of the JSON header"):
        codec.decode(models["tensor"], body, None, [(HEADER, b"99999")])
    header = json.loads(body[: int(headers[0][1])])
    header["inputs"][0]["parameters"]["binary_data_size"] = 12
    raw = json.dumps(header).encode()
    with pytest.raises(InputError, match="not a whole number of 8-byte values"):
        codec.decode(models["tensor"], raw + b"\x00" * 12, None, [(HEADER, str(len(raw)).encode())])


def test_protocol_parameters_stay_out_of_model_params(models: dict[str, ServedModel]) -> None:
    codec = V2Codec("model")
    a, b = triton.InferInput("a", [1], "FP64"), triton.InferInput("b", [1], "FP64")
    a.set_data_from_numpy(np.array([1.0]), binary_data=False)
    b.set_data_from_numpy(np.array([2.0]), binary_data=False)
    body, headers = request([a, b], priority=3, timeout=10, parameters={"scale": 2.0})
    inp, requested = codec.decode(models["params"], body, None, headers)
    assert inp.params == {"scale": 2.0, "offset": 0.0}  # MLflow's params schema filled the default
    assert requested.binary and requested.outputs is None
    body, headers = request([a, b], priority=3)
    inp, _ = codec.decode(models["params"], body, None, headers)
    assert inp.params == {"scale": 1.0, "offset": 0.0}


DIABETES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def _columns_body(data: list[list[Any]], order: list[int]) -> bytes:
    inputs = [
        {"name": DIABETES[j], "shape": [len(data[j])], "datatype": "FP64", "data": data[j]} for j in order
    ]
    return json.dumps({"inputs": inputs}).encode()


@pytest.mark.parametrize(
    "column",
    [
        [0.5],  # one row
        [0.25, -1.0, 3],  # ints in a double column
        [None, 0.5, None],  # nulls: NaN
        [0.5, "x"],  # a string: 400 naming column and row
        [0.5, True],  # a bool is not a double
    ],
)
def test_column_fast_path_is_the_general_path(models: dict[str, ServedModel], column: list[Any]) -> None:
    """Inputs naming the signature's columns in order take the one-pass path; the same inputs in
    another order take the general one (loop, then from_columns): identical arrays or errors."""
    codec, model = V2Codec("model"), models["diabetes"]
    data = [[float(j)] * (len(column)) for j in range(len(DIABETES))]
    data[3] = column
    outcomes = []
    for order in (list(range(len(DIABETES))), list(reversed(range(len(DIABETES))))):
        try:
            inp, _ = codec.decode(model, _columns_body(data, order), None)
            outcomes.append(("ok", inp.data, inp.rows, inp.batch_key))
        except InputError as exc:
            outcomes.append(("error", exc.code, exc.message))
    fast, general = outcomes
    assert fast[0] == general[0]
    if fast[0] == "ok":
        np.testing.assert_array_equal(fast[1], general[1])
        assert (
            fast[1].dtype == general[1].dtype and fast[1].flags.f_contiguous == general[1].flags.f_contiguous
        )
        assert fast[2:] == general[2:]
    else:
        assert fast == general and "column 'bp'" in fast[2]


def test_column_inputs_not_exactly_the_signature_keep_their_errors(models: dict[str, ServedModel]) -> None:
    codec, model = V2Codec("model"), models["diabetes"]
    data = [[0.5, 0.5] for _ in DIABETES]
    data[2] = [0.5]
    with pytest.raises(InputError, match="columns have different lengths"):
        codec.decode(model, _columns_body(data, list(range(len(DIABETES)))), None)
    with pytest.raises(InputError, match=r"missing column\(s\) \['s6'\]"):
        codec.decode(model, _columns_body([[0.5]] * 10, list(range(9))), None)
    body = json.loads(_columns_body([[0.5]] * 10, list(range(10))))
    body["inputs"][4]["shape"] = [2]
    with pytest.raises(InputError, match=r"inputs\[4\] 's1': shape \[2\] needs 2 values, got 1"):
        codec.decode(model, json.dumps(body).encode(), None)
    body["inputs"][4]["shape"], body["outputs"] = [1], [{"name": "nope"}]
    with pytest.raises(ClientError, match="the model has no output 'nope'"):
        codec.decode(model, json.dumps(body).encode(), None)


@pytest.mark.parametrize(
    "change",
    [
        {"shape": [True]},  # a bool is not a size
        {"shape": [1.0]},
        {"shape": [1, 1]},
        {"data": [[0.5]]},  # nested data, flattened by the general path
        {"datatype": "FP32"},
        {"parameters": {}},
        {"extra": 1},
    ],
)
def test_column_inputs_off_the_fast_path_decode_as_before(
    models: dict[str, ServedModel], change: dict[str, Any]
) -> None:
    codec, model = V2Codec("model"), models["diabetes"]
    outcomes = []
    for order in (list(range(10)), list(reversed(range(10)))):
        body = json.loads(_columns_body([[0.5]] * 10, order))
        body["inputs"][order.index(4)].update(change)
        try:
            inp, _ = codec.decode(model, json.dumps(body).encode(), None)
            outcomes.append(inp.data.tolist())
        except (InputError, ClientError) as exc:
            outcomes.append(str(exc).replace("inputs[5]", "inputs[4]"))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("shape", [[1, 1.0], [1, True]])
def test_column_sizes_equal_to_ints_but_not_ints_keep_the_general_paths_answer(
    models: dict[str, ServedModel], shape: list[Any]
) -> None:
    """Every input [1, 1.0] (or [1, true]): equal to [1, 1] under ==, so only a type check keeps the
    one-pass path from taking what the general path refuses."""
    codec, model = V2Codec("model"), models["diabetes"]
    for order in (list(range(10)), list(reversed(range(10)))):  # the one-pass path's order, then another
        body = json.loads(_columns_body([[0.5]] * 10, order))
        for t in body["inputs"]:
            t["shape"] = shape
        first = DIABETES[order[0]]
        with pytest.raises(InputError, match=rf"inputs\[0\] '{first}': 'shape' must be a list of sizes"):
            codec.decode(model, json.dumps(body).encode(), None)


@pytest.mark.parametrize(
    ("column_type", "values"),
    [
        ("double", [[0.5, None, 2], [1.0, 1.5, float("inf")]]),  # ints and nulls in double columns
        ("float", [[0.1], [0.2]]),
        ("long", [[1, -(2**63)], [2**63 - 1, 0]]),
        ("integer", [[7, 8, 9], [1, 2, 3]]),
        ("boolean", [[True, False], [False, False]]),
        ("double", [[], []]),  # no rows
    ],
)
def test_column_lists_decode_as_numpy_builds_them(column_type: str, values: list[list[Any]]) -> None:
    """`from_lists` fills its block from the flat values (np.fromiter): the array np.array builds from
    the nested lists, value for value, dtype and layout."""
    decoder = ColumnDecoder([ColumnSpec("a", column_type), ColumnSpec("b", column_type)])
    got = decoder.from_lists(values)
    dtype = decoder.shared_dtype
    assert dtype is not None
    want = np.array(values, dtype=dtype).reshape(2, -1).T
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.flags.f_contiguous == want.flags.f_contiguous


def test_a_column_value_out_of_range_is_a_clear_error() -> None:
    decoder = ColumnDecoder([ColumnSpec("a", "long"), ColumnSpec("b", "long")])
    with pytest.raises(InputError, match="a value is out of range for long"):
        decoder.from_lists([[1], [2**70]])


@pytest.mark.parametrize(
    "predictions",
    [
        np.array([152.1]),
        np.array([[0.1, 0.9], [0.8, 0.2]]),
        np.array([1, 2, 3], dtype=np.int64),
        np.array([True, False]),
        np.array([1.5], dtype=np.float32),
    ],
)
@pytest.mark.parametrize("request_id", [None, "r-1", 'r"\\1 ü\n', 7])
@pytest.mark.parametrize(
    ("model_name", "served"), [("model", "diabetes"), ('mo"dèl', "iris"), ("t", "tensor")]
)
def test_the_common_reply_is_the_general_paths_bytes(
    models: dict[str, ServedModel],
    predictions: np.ndarray,
    request_id: str | int | None,
    model_name: str,
    served: str,
) -> None:
    """One numeric array, JSON, all outputs: the short path's reply, written around the array, is
    byte for byte the one the general path makes (reached here with a Series or a list, which it
    turns into the same array), whatever the names and the request id hold."""
    codec, model = V2Codec(model_name), models[served]
    requested = Requested(request_id, None, False)
    short = codec.encode(model, predictions, requested)
    same = pd.Series(predictions) if predictions.ndim == 1 else predictions.tolist()  # float64 rows
    general = codec.encode(model, same, requested)
    assert short == general
    reply = json.loads(short[1])
    assert reply["model_name"] == model_name
    names = codec.output_names(model)
    assert reply["outputs"][0]["name"] == (names[0] if len(names) == 1 else "predictions")
    assert reply["outputs"][0]["shape"] == list(predictions.shape)
    assert reply["outputs"][0]["data"] == predictions.ravel().tolist()
    assert reply.get("id") == request_id
