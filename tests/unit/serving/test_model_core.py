"""The scoring core against real MLflow models: validation, the fast path's equality with pyfunc, batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlendpoints_serving.model import InputError, ModelError, ServedModel, load
from mlendpoints_serving.model.core import Format, dumps, jsonable
from tests.unit.serving.support import save_behaving_model

FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def models(model_dirs: dict[str, Path]) -> dict[str, ServedModel]:
    return {name: load(path) for name, path in model_dirs.items()}


@pytest.fixture(scope="module")
def references(model_dirs: dict[str, Path]) -> dict[str, Any]:
    """The same models as MLflow loads them: what every prediction is compared with."""
    import mlflow.pyfunc

    return {name: mlflow.pyfunc.load_model(str(path)) for name, path in model_dirs.items()}


def rows_of(width: int) -> st.SearchStrategy[list[list[float]]]:
    return st.lists(st.lists(FINITE, min_size=width, max_size=width), min_size=1, max_size=20)


def test_fast_path_is_taken_for_every_fixture_model(models: dict[str, ServedModel]) -> None:
    assert {name: m.fast for name, m in models.items()} == dict.fromkeys(models, True)


@pytest.mark.parametrize("name", ["diabetes", "iris", "params"])
def test_input_example_scores_like_pyfunc(
    models: dict[str, ServedModel], references: dict[str, Any], name: str
) -> None:
    model = models[name]
    split = model.input_example["dataframe_split"]
    fast = model.predict(model.decode(Format.SPLIT, split))
    reference = references[name].predict(pd.DataFrame(split["data"], columns=split["columns"]))
    np.testing.assert_array_equal(fast, reference)


@PROPERTY
@given(data=st.data())
def test_fast_path_equals_pyfunc_predict_on_any_rows(
    models: dict[str, ServedModel], references: dict[str, Any], data: Any
) -> None:
    name = data.draw(st.sampled_from(["diabetes", "iris", "params"]))
    model = models[name]
    assert model.columns is not None
    cols = model.columns.names
    rows = data.draw(rows_of(len(cols)))
    params = data.draw(st.none() | st.fixed_dictionaries({"scale": FINITE})) if name == "params" else None
    shapes = {
        Format.SPLIT: {"columns": cols, "data": rows},
        Format.RECORDS: [dict(zip(cols, r, strict=True)) for r in rows],
        Format.INPUTS: {c: [r[i] for r in rows] for i, c in enumerate(cols)},
        Format.INSTANCES: rows,
    }
    fmt = data.draw(st.sampled_from(list(shapes)))
    fast = model.predict(model.decode(fmt, shapes[fmt], params))
    reference = references[name].predict(pd.DataFrame(rows, columns=cols), params=params)
    np.testing.assert_array_equal(fast, reference)
    assert dumps(jsonable(fast)) == dumps(jsonable(reference))


@PROPERTY
@given(rows=rows_of(4))
def test_tensor_fast_path_equals_pyfunc_predict(
    models: dict[str, ServedModel], references: dict[str, Any], rows: list[list[float]]
) -> None:
    model = models["tensor"]
    fast = model.predict(model.decode(Format.INPUTS, rows))
    np.testing.assert_array_equal(fast, references["tensor"].predict(np.array(rows, dtype=np.float64)))


@PROPERTY
@given(data=st.data())
def test_batched_predictions_equal_unbatched(models: dict[str, ServedModel], data: Any) -> None:
    name = data.draw(st.sampled_from(["diabetes", "iris", "params", "tensor"]))
    model = models[name]
    width = len(model.columns.names) if model.columns else 4
    requests = data.draw(st.lists(rows_of(width), min_size=2, max_size=8))
    if model.columns:
        inputs = [model.decode(Format.SPLIT, {"columns": model.columns.names, "data": r}) for r in requests]
    else:
        inputs = [model.decode(Format.INPUTS, r) for r in requests]
    assert len({i.batch_key for i in inputs}) == 1
    assert inputs[0].batch_key is not None  # batchable: one key, not none at all
    batched = model.predict_many(inputs)
    for inp, part in zip(inputs, batched, strict=True):
        alone = model.predict(inp)
        if name != "diabetes":
            assert dumps(jsonable(part)) == dumps(jsonable(alone))
            continue
        # Ridge predicts through BLAS gemv, whose SIMD kernels round a row differently depending
        # on its position in the matrix: equal up to rounding of the row's dot product.
        ridge = model.model_impl  # loaded natively: the estimator itself
        bound = 1e-13 * (np.abs(model.frame(inp).to_numpy()) @ np.abs(ridge.coef_) + abs(ridge.intercept_))
        assert part.shape == alone.shape
        assert np.all(np.abs(part - alone) <= bound)


def assert_same_prediction(model: ServedModel, name: str, inp: Any, got: Any, alone: Any) -> None:
    """Batched equals alone: exactly, except Ridge's BLAS rounding (bounded by the row's magnitude)."""
    if name != "diabetes":
        assert dumps(jsonable(got)) == dumps(jsonable(alone))
        return
    # Ridge predicts through BLAS gemv, whose SIMD kernels round a row differently depending
    # on its position in the matrix: equal up to rounding of the row's dot product.
    ridge = model.model_impl  # loaded natively: the estimator itself
    bound = 1e-13 * (np.abs(model.frame(inp).to_numpy()) @ np.abs(ridge.coef_) + abs(ridge.intercept_))
    assert got.shape == alone.shape
    assert np.all(np.abs(got - alone) <= bound)


@PROPERTY
@given(data=st.data())
def test_the_batcher_answers_as_unbatched_and_as_pyfunc(
    models: dict[str, ServedModel], references: dict[str, Any], data: Any
) -> None:
    """Through the continuous batcher, concurrently: the idle path (the first input runs alone),
    batches of what queued meanwhile, and bypass (inputs of max_rows rows or more)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from mlendpoints_serving.server.batching import AdaptiveBatcher

    name = data.draw(st.sampled_from(["diabetes", "iris", "params", "tensor"]))
    model = models[name]
    width = len(model.columns.names) if model.columns else 4
    requests = data.draw(st.lists(rows_of(width), min_size=1, max_size=12))
    max_rows = data.draw(st.integers(min_value=2, max_value=16))
    if model.columns:
        inputs = [model.decode(Format.SPLIT, {"columns": model.columns.names, "data": r}) for r in requests]
    else:
        inputs = [model.decode(Format.INPUTS, r) for r in requests]
    sizes: list[list[int]] = []

    def predict_many(batch: Any) -> list[Any]:
        sizes.append([i.rows or 0 for i in batch])
        return model.predict_many(batch)

    async def go() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(predict_many, model.predict, pool, max_rows=max_rows)
            return await asyncio.gather(*(batcher.submit(i) for i in inputs))

    results = asyncio.run(go())
    if (inputs[0].rows or 0) < max_rows:
        assert sizes[0] == [inputs[0].rows or 0]  # the model was idle: the first input ran at once, alone
    assert all(sum(batch) <= max_rows for batch in sizes)
    assert all(rows < max_rows for batch in sizes for rows in batch)  # larger ones bypassed
    for inp, rows, got in zip(inputs, requests, results, strict=True):
        alone = model.predict(inp)
        assert_same_prediction(model, name, inp, got, alone)
        reference = references[name]
        frame = pd.DataFrame(rows, columns=model.columns.names) if model.columns else np.array(rows)
        assert_same_prediction(model, name, inp, got, np.asarray(reference.predict(frame)))


def test_records_columns_and_positional_rows_decode_alike(models: dict[str, ServedModel]) -> None:
    model = models["iris"]
    cols = model.columns.names if model.columns else []
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    split = model.decode(Format.SPLIT, {"columns": list(reversed(cols)), "data": [r[::-1] for r in rows]})
    records = model.decode(Format.RECORDS, [dict(zip(cols, r, strict=True)) for r in rows])
    columns = model.decode(Format.INPUTS, {c: [r[i] for r in rows] for i, c in enumerate(cols)})
    positional = model.decode(Format.INSTANCES, rows)
    for other in (records, columns, positional):
        pd.testing.assert_frame_equal(model.frame(split), model.frame(other))


@pytest.mark.parametrize("name", ["diabetes", "params"])
def test_a_request_without_params_gets_the_key_of_null_params(
    models: dict[str, ServedModel], name: str
) -> None:
    """Without params (and, for `params`, with its schema's defaults enforced): a batch key that
    requests without params share, and that requests with other params do not."""
    model = models[name]
    split = {"columns": model.columns.names, "data": [[1.0] * len(model.columns.names)]}
    plain = model.decode(Format.SPLIT, split)
    assert plain.batch_key is not None
    assert plain.batch_key == model.decode(Format.SPLIT, split, None).batch_key
    if name == "params":
        assert plain.params == {"scale": 1.0, "offset": 0.0}  # the schema's defaults, enforced
        other = model.decode(Format.SPLIT, split, {"scale": 2.0})
        assert other.batch_key != plain.batch_key
    else:
        assert plain.params is None
        assert plain.batch_key == (("frame",), b"null")


def test_int_values_are_accepted_for_double_columns(models: dict[str, ServedModel]) -> None:
    model = models["params"]
    inp = model.decode(Format.SPLIT, {"columns": ["a", "b"], "data": [[1, 2]]})
    assert model.frame(inp).dtypes.tolist() == [np.float64, np.float64]
    assert model.predict(inp).tolist() == [3.0]


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        (
            Format.SPLIT,
            {"columns": ["a", "b"], "data": [[1.0, "x"]]},
            "column 'b' (row 0): expected double, got string",
        ),
        (
            Format.SPLIT,
            {"columns": ["a", "b"], "data": [[1.0, True]]},
            "column 'b' (row 0): expected double, got boolean",
        ),
        (Format.SPLIT, {"columns": ["a"], "data": [[1.0]]}, "missing column(s) ['b']"),
        (Format.SPLIT, {"columns": ["a", "b"], "data": [[1.0]]}, "row 0: expected a list of 2 values"),
        (Format.SPLIT, {"columns": ["a", "b"]}, "has no 'data'"),
        (Format.RECORDS, [{"a": 1.0}], "record 0: missing column 'b'"),
        (Format.RECORDS, [{"a": 1.0, "b": [1]}], "column 'b' (row 0): expected double, got array"),
        (Format.INPUTS, {"a": [1.0, 2.0], "b": [1.0]}, "columns have different lengths"),
        (Format.INSTANCES, "text", "must be rows, records or an object of columns"),
    ],
)
def test_input_errors_name_the_column_and_expectation(
    models: dict[str, ServedModel], fmt: Format, value: Any, expected: str
) -> None:
    with pytest.raises(InputError) as err:
        models["params"].decode(fmt, value)
    assert expected in err.value.message


def test_params_are_enforced_against_the_params_schema(models: dict[str, ServedModel]) -> None:
    model = models["params"]
    inp = model.decode(Format.SPLIT, {"columns": ["a", "b"], "data": [[1.0, 2.0]]}, {"scale": 2.0})
    assert inp.params == {"scale": 2.0, "offset": 0.0}
    assert model.predict(inp).tolist() == [6.0]
    with pytest.raises(InputError, match="scale"):
        model.decode(Format.SPLIT, {"columns": ["a", "b"], "data": [[1.0, 2.0]]}, {"scale": "big"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([[1.0, 2.0, 3.0]], "expected float64 of shape [-1, 4], got shape [1, 3]"),
        ([[1.0, 2.0], [1.0]], "ragged"),
        ([["a", "b", "c", "d"]], "got str"),
        ([1.0, 2.0, 3.0, 4.0], "got shape [4]"),
    ],
)
def test_tensor_errors_name_shape_and_dtype(
    models: dict[str, ServedModel], value: Any, expected: str
) -> None:
    with pytest.raises(InputError) as err:
        models["tensor"].decode(Format.INPUTS, value)
    assert expected in err.value.message


def test_model_exception_becomes_model_error_with_type_and_message(tmp_path: Path) -> None:
    model = load(save_behaving_model(tmp_path / "behaving"))
    inp = model.decode(Format.SPLIT, {"columns": ["x", "y"], "data": [[1.0, 2.0]]}, {"fail": True})
    with pytest.raises(ModelError) as err:
        model.predict(inp)
    assert (err.value.type, err.value.message) == ("ValueError", "the model refuses this input")


def test_not_an_mlflow_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no MLmodel"):
        load(tmp_path)
