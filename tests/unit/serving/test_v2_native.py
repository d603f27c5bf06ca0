"""V2's compiled decoder (images/serving/native) against the Python path it accelerates.

The compiled decoder takes the common request of a float64 column model in one pass, or
declines and leaves the body to the Python path. Whatever the body, the codec must answer
the same with it as without it: the same block (bytes, shape, layout), rows, batch key and
reply options, or the same error. Bodies here are the common request, then that request
bent every way the protocol and JSON allow (key order, extra and missing keys, other names,
shapes, datatypes, ids, number spellings, nulls, bools, strings), then raw byte mutations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlendpoints_serving.model import InputError, ServedModel, load
from mlendpoints_serving.server.codecs import ClientError
from mlendpoints_serving.server.v2 import DATATYPES, V2Codec

DIABETES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def model(model_dirs: dict[str, Path]) -> ServedModel:
    return load(model_dirs["diabetes"])


def outcome(codec: V2Codec, model: ServedModel, body: bytes) -> tuple[Any, ...]:
    try:
        inp, requested = codec.decode(model, body, "application/json")
    except (InputError, ClientError) as exc:
        return ("error", type(exc).__name__, getattr(exc, "status", None), exc.code, str(exc))
    data = inp.data
    layout = (
        data.shape,
        data.dtype.str,
        data.flags.f_contiguous,
        data.flags.c_contiguous,
        data.flags.writeable,
    )
    return (
        "ok",
        data.tobytes(order="A"),
        layout,
        inp.rows,
        inp.batch_key,
        inp.params,
        inp.generic,
        requested,
    )


def assert_same(model: ServedModel, body: bytes) -> tuple[Any, ...]:
    native = outcome(V2Codec("model"), model, body)
    assert native == outcome(V2Codec("model", native=False), model, body), body[:300]
    return native


def test_the_compiled_decoder_is_installed_and_takes_the_common_request(model: ServedModel) -> None:
    """The project's setup and the serving image install it: a failed build fails here, not silently
    into the Python path (which would still pass every equivalence test below)."""
    import mlendpoints_native

    body = json.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": n, "shape": [2, 1], "datatype": "FP64", "data": [0.25 * j, -1]}
                for j, n in enumerate(DIABETES)
            ],
        }
    ).encode()
    decoded = mlendpoints_native.V2Columns(DIABETES, list(DATATYPES)).decode(body)
    assert decoded is not None
    values, rows, request_id = decoded
    assert rows == 2 and request_id == "r1"
    assert np.frombuffer(values, np.float64).tolist() == [v for j in range(10) for v in (0.25 * j, -1.0)]
    assert assert_same(model, body)[0] == "ok"


# -- the common request, bent --------------------------------------------------------------

# What clients send: floats (not -0.0, which the compiled decoder declines) and integers.
_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != 0 or str(v) == "0.0").map(repr),
    st.integers(-(2**70), 2**70).map(str),
)
# Then the rest of what JSON spells as a number, and what is not a number at all.
_ODD_VALUES = st.one_of(
    _NUMBERS,
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["-0", "0", "-0.0", "1E5", "1e-400", "1e400", "2.50", "-1.0e+2", "9007199254740993"]),
    st.sampled_from(["null", "true", "false", '"0.5"', "[0.5]", "{}"]),
)


@st.composite
def bent_requests(draw: st.DrawFn) -> bytes:
    rows = draw(st.sampled_from([1, 1, 2, 3, 0]))
    shape = draw(st.sampled_from([[rows], [rows, 1]] * 3 + [[rows, 2], [rows + 1], [1.0 * rows], [True]]))
    # Mostly numbers: most requests are then the common one, which the compiled decoder takes.
    values = _ODD_VALUES if draw(st.integers(0, 3)) == 0 else _NUMBERS
    inputs = []
    for name in DIABETES:
        fields: dict[str, str] = {
            "name": json.dumps(name),
            "shape": json.dumps(shape),
            "datatype": '"FP64"',
            "data": "[" + ",".join(draw(st.lists(values, min_size=rows, max_size=rows))) + "]",
        }
        inputs.append(fields)
    bend = draw(
        st.sampled_from(
            ["none"] * 4 + ["order", "extra", "missing", "name", "escape", "swap", "drop", "datatype"]
        )
    )
    target = draw(st.integers(0, len(DIABETES) - 1))
    if bend == "datatype":  # any V2 datatype is taken for a column (its values are what is checked)
        inputs[target]["datatype"] = json.dumps(draw(st.sampled_from(["FP32", "INT64", "BYTES", "FP128", 1])))
    if bend == "extra":
        inputs[target]["parameters"] = draw(st.sampled_from(["{}", '{"binary_data_size": 8}', "null"]))
    elif bend == "missing":
        del inputs[target][draw(st.sampled_from(["name", "shape", "datatype", "data"]))]
    elif bend == "name":
        inputs[target]["name"] = json.dumps(draw(st.sampled_from(["Age", "s7", "", "age "])))
    elif bend == "escape":  # the same name, spelled with JSON escapes
        inputs[target]["name"] = '"' + "".join(f"\\u{ord(c):04x}" for c in DIABETES[target]) + '"'
    elif bend == "swap":
        inputs[0], inputs[target] = inputs[target], inputs[0]
    elif bend == "drop":
        del inputs[target]
    objects = []
    for fields in inputs:
        keys = draw(st.permutations(list(fields))) if bend == "order" else list(fields)
        objects.append("{" + ",".join(f'"{k}":{fields[k]}' for k in keys) + "}")
    top = {"inputs": "[" + ",".join(objects) + "]"}
    request_id = draw(st.sampled_from([None, '"r"', '""', "7", "null"]))
    if request_id is not None:
        top["id"] = request_id
    extra = draw(st.sampled_from([None, None, "parameters", "outputs", "foo"]))
    if extra == "parameters":
        top["parameters"] = draw(st.sampled_from(["{}", '{"binary_data_output": true}', '{"alpha": 1}']))
    elif extra == "outputs":
        top["outputs"] = draw(st.sampled_from(['[{"name": "predictions"}]', '[{"name": "nope"}]']))
    elif extra == "foo":
        top["foo"] = "1"
    keys = draw(st.permutations(list(top)))
    space = draw(st.sampled_from(["", " ", "\n "]))
    return ("{" + ("," + space).join(f'{space}"{k}":{space}{top[k]}' for k in keys) + "}").encode()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bent_requests())
def test_any_bent_request_decodes_as_the_python_path_decodes_it(model: ServedModel, body: bytes) -> None:
    assert_same(model, body)


@settings(max_examples=400, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.sampled_from(list('{}[]",:0-.eE1 \\n'))),
        min_size=1,
        max_size=4,
    )
)
def test_a_mutated_body_decodes_or_fails_as_the_python_path_has_it(
    model: ServedModel, edits: list[tuple[int, int, str]]
) -> None:
    body = bytearray(
        json.dumps(
            {"inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [0.5]} for n in DIABETES]}
        ).encode()
    )
    for position, removed, inserted in edits:
        at = position % (len(body) + 1)
        body[at : at + removed] = inserted.encode()
    assert_same(model, bytes(body))


@pytest.mark.parametrize(
    ("spelling", "value"),
    [
        ("-0", 0.0),
        ("-0.0", -0.0),
        ("1E5", 1e5),
        ("1e-400", 0.0),
        ("2.2250738585072011e-308", 2.2250738585072011e-308),
        ("9007199254740993", 9007199254740992.0),
        ("-9223372036854775809", -9.223372036854776e18),
        ("100000000000000000000", 1e20),
    ],
)
def test_number_spellings_are_read_as_python_reads_them(
    model: ServedModel, spelling: str, value: float
) -> None:
    """The integer -0 is Python's 0 (serde_json reads -0.0: the compiled decoder declines it);
    integers past 64 bits are floats in orjson as in serde_json; floats are correctly rounded."""
    inputs = [f'{{"name":"{n}","shape":[1],"datatype":"FP64","data":[{spelling}]}}' for n in DIABETES]
    body = ('{"inputs":[' + ",".join(inputs) + "]}").encode()
    result = assert_same(model, body)
    assert result[0] == "ok"
    got = np.frombuffer(result[1], np.float64)
    assert got.tobytes() == np.full(10, value).tobytes()
