"""Fuzzing the scoring routes of a real server: no client input yields a 500 or a non-JSON error."""

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


@pytest.fixture(scope="module")
def params_server(params_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(params_model, tmp_path_factory.mktemp("fuzz") / "serve.log", "--max-batch-size", "8") as s:
        yield s


@pytest.fixture(scope="module")
def tensor_server(tensor_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tensor_model, tmp_path_factory.mktemp("fuzz-tensor") / "serve.log") as s:
        yield s


def check(client: httpx.Client, route: str, body: bytes, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    resp = client.post(route, content=body, headers=headers)
    assert resp.status_code < 500, (route, body, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    payload: Any = resp.json()
    if resp.status_code >= 400:
        assert isinstance(payload["error"]["code"], str) and payload["error"]["message"]


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
