"""Fuzzing the scoring routes of a real server: no client input yields a 5xx or a non-JSON error.

The property: any input that the document (/swagger.json) or the signature rejects is a
4xx; a model that cannot take an input the signature lets through (no rows, null/NaN for
the diabetes regressor) is a 4xx naming the problem too. A 5xx is the server's or the
model's fault only, and none of these models breaks on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.serving.support import Server, serve

pytestmark = pytest.mark.slow

ROUTES = ["/score", "/invocations", "/v2/models/model/infer"]
CONTENT_TYPES = [
    "application/json",
    "text/csv",
    "text/plain",
    "application/json; charset=latin-1",
    "",
    "a/b;x",
]
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=30,
)
COLUMNS = st.sampled_from(["a", "b", "x", "0"])
ROWS = st.lists(st.lists(SCALARS | JSON_VALUES, max_size=4), max_size=4)
FRAMES = st.fixed_dictionaries(
    {"data": ROWS}, optional={"columns": st.lists(COLUMNS | SCALARS, max_size=4), "index": JSON_VALUES}
)
PAYLOADS = (
    st.fixed_dictionaries(
        {"input_data": FRAMES | ROWS | st.dictionaries(COLUMNS, JSON_VALUES) | JSON_VALUES},
        optional={"params": JSON_VALUES | st.dictionaries(st.sampled_from(["scale", "offset"]), SCALARS)},
    )
    | st.dictionaries(
        st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "params"]),
        FRAMES | ROWS | st.lists(st.dictionaries(COLUMNS, SCALARS), max_size=3) | JSON_VALUES,
        max_size=3,
    )
    | st.fixed_dictionaries(
        {
            "inputs": st.lists(
                st.fixed_dictionaries(
                    {"name": COLUMNS | SCALARS, "data": JSON_VALUES},
                    optional={
                        "shape": st.lists(st.integers(-2, 5), max_size=3) | JSON_VALUES,
                        "datatype": st.sampled_from(["FP64", "BYTES", "INT64"]),
                    },
                ),
                max_size=3,
            )
        }
    )
    | JSON_VALUES
)
BODIES = (
    PAYLOADS.map(lambda p: json.dumps(p, allow_nan=True).encode())
    | st.binary(max_size=64)
    | st.text(max_size=64).map(str.encode)
)

# Near-valid input for the diabetes regressor: its columns, values that may be null (NaN),
# zero rows, short rows, in every protocol's shape.
DIABETES_COLS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
VALUE = st.floats(-10, 10) | st.integers(-5, 5) | st.none()
DIABETES_ROWS = st.lists(st.lists(VALUE, min_size=9, max_size=10), max_size=3)
DIABETES_FRAMES = st.fixed_dictionaries({"data": DIABETES_ROWS}, optional={"columns": st.just(DIABETES_COLS)})
DIABETES_RECORDS = st.lists(st.fixed_dictionaries({c: VALUE for c in DIABETES_COLS}), max_size=3)
DIABETES_NAMED = st.fixed_dictionaries(
    {c: st.lists(VALUE, min_size=0, max_size=2) | VALUE for c in DIABETES_COLS}
)
V2_TENSORS = st.lists(st.lists(VALUE, min_size=0, max_size=2), min_size=10, max_size=10).map(
    lambda cols: {
        "inputs": [
            {"name": n, "shape": [len(v)], "datatype": "FP64", "data": v}
            for n, v in zip(DIABETES_COLS, cols, strict=True)
        ]
    }
)
DIABETES_BODIES = st.one_of(
    st.fixed_dictionaries(
        {"input_data": DIABETES_FRAMES | DIABETES_ROWS | DIABETES_RECORDS | DIABETES_NAMED},
        optional={"params": st.none() | st.dictionaries(st.text(max_size=3), SCALARS, max_size=2)},
    ),
    st.fixed_dictionaries({"dataframe_split": DIABETES_FRAMES}),
    st.fixed_dictionaries({"dataframe_records": DIABETES_RECORDS}),
    st.fixed_dictionaries({"instances": DIABETES_ROWS | DIABETES_RECORDS}),
    st.fixed_dictionaries({"inputs": DIABETES_NAMED}),
    V2_TENSORS,
).map(lambda p: json.dumps(p).encode())
DIABETES_CSV = st.lists(st.lists(VALUE, min_size=10, max_size=10), max_size=3).map(
    lambda rows: (
        ",".join(DIABETES_COLS)
        + "\n"
        + "".join(",".join("" if v is None else str(v) for v in r) + "\n" for r in rows)
    ).encode()
)
# The binary tensor data extension: a JSON header whose stated length may be wrong, then raw bytes.
V2_BINARY = st.tuples(V2_TENSORS, st.binary(max_size=40), st.integers(-2, 2)).map(
    lambda t: _binary_request(*t)
)


def _binary_request(payload: dict[str, Any], raw: bytes, skew: int) -> tuple[bytes, int]:
    for tensor in payload["inputs"][:2]:
        tensor.pop("data")
        tensor["parameters"] = {"binary_data_size": len(raw) // 2}
    header = json.dumps(payload).encode()
    return header + raw, len(header) + skew


@pytest.fixture(scope="module")
def params_server(params_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(params_model, tmp_path_factory.mktemp("fuzz") / "serve.log", "--max-batch-size", "8") as s:
        yield s


@pytest.fixture(scope="module")
def diabetes_server(diabetes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(
        diabetes_model, tmp_path_factory.mktemp("fuzz-diabetes") / "serve.log", "--max-batch-size", "8"
    ) as s:
        yield s


@pytest.fixture(scope="module")
def tensor_server(tensor_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tensor_model, tmp_path_factory.mktemp("fuzz-tensor") / "serve.log") as s:
        yield s


def check(
    client: httpx.Client, route: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    headers = {**({"content-type": content_type} if content_type else {}), **(headers or {})}
    resp = client.post(route, content=body, headers=headers)
    assert resp.status_code < 500, (route, body, resp.text)
    if resp.status_code == 200 and "inference-header-content-length" in resp.headers:
        return resp  # binary tensor data after the JSON header
    assert resp.headers["content-type"].startswith("application/json")
    payload: Any = resp.json()
    if resp.status_code >= 400:
        if route.startswith("/v2"):  # the Open Inference Protocol's form: {"error": <message>}
            assert isinstance(payload["error"], str) and payload["error"] and payload["code"]
        else:
            assert isinstance(payload["error"]["code"], str) and payload["error"]["message"]
    return resp


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(route=st.sampled_from(ROUTES), body=BODIES, content_type=st.sampled_from(CONTENT_TYPES))
def test_no_input_makes_a_dataframe_model_fail(
    params_server: Server, route: str, body: bytes, content_type: str
) -> None:
    with params_server.client() as client:
        check(client, route, body, content_type)


@FUZZ
@given(route=st.sampled_from(ROUTES), body=BODIES, content_type=st.sampled_from(CONTENT_TYPES[:2]))
def test_no_input_makes_a_tensor_model_fail(
    tensor_server: Server, route: str, body: bytes, content_type: str
) -> None:
    with tensor_server.client() as client:
        check(client, route, body, content_type)


@FUZZ
@given(route=st.sampled_from(ROUTES), body=DIABETES_BODIES | BODIES)
def test_no_input_makes_a_model_that_refuses_nan_or_empty_input_fail(
    diabetes_server: Server, route: str, body: bytes
) -> None:
    with diabetes_server.client() as client:
        check(client, route, body, "application/json")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=DIABETES_CSV)
def test_no_csv_makes_a_model_that_refuses_nan_or_empty_input_fail(
    diabetes_server: Server, body: bytes
) -> None:
    with diabetes_server.client() as client:
        check(client, "/invocations", body, "text/csv")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=V2_BINARY)
def test_no_binary_tensor_data_makes_v2_fail(diabetes_server: Server, request: tuple[bytes, int]) -> None:
    body, header_length = request
    with diabetes_server.client() as client:
        check(
            client,
            "/v2/models/model/infer",
            body,
            "application/octet-stream",
            {"inference-header-content-length": str(header_length)},
        )
