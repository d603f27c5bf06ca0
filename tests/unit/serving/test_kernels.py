"""Linear regressors predict through their matrix product, bit for bit what scikit-learn's predict() gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import ElasticNet, Lasso, LassoLars, LinearRegression, LogisticRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

from mlendpoints_serving.model import ModelError, load
from mlendpoints_serving.model.core import Format, ServedModel
from mlendpoints_serving.model.kernels import linear

COLUMNS = ["a", "b", "c", "d"]


def served(
    tmp_path: Path, estimator: Any, targets: int = 1, dtype: str = "float64"
) -> tuple[ServedModel, Any]:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(60, len(COLUMNS))).astype(dtype), columns=COLUMNS)
    y = frame.to_numpy() @ rng.normal(size=(len(COLUMNS), targets)) + 3.0
    estimator.fit(frame, y[:, 0] if targets == 1 else y)
    mlflow.sklearn.save_model(
        estimator,
        str(tmp_path / "m"),
        signature=mlflow.models.infer_signature(frame, estimator.predict(frame)),
    )
    return load(tmp_path / "m"), estimator


def uses_kernel(model: ServedModel) -> bool:
    return getattr(model._array_predict, "__qualname__", "").startswith("linear.")


@pytest.mark.parametrize(
    ("estimator", "targets", "dtype"),
    [
        (Ridge(alpha=0.5), 1, "float64"),
        (Ridge(), 3, "float64"),
        (LinearRegression(), 1, "float64"),
        (LinearRegression(), 2, "float32"),
        (LassoLars(alpha=0.01), 1, "float64"),
    ],
)
def test_linear_regressors_take_the_kernel_and_predict_as_sklearn(
    tmp_path: Path, estimator: Any, targets: int, dtype: str
) -> None:
    model, fitted = served(tmp_path, estimator, targets, dtype)
    assert uses_kernel(model)
    rng = np.random.default_rng(11)
    for rows in (1, 2, 16, 100, 1000):
        data = rng.normal(scale=10, size=(rows, len(COLUMNS))).round(4).astype(dtype).tolist()
        inp = model.decode(Format.SPLIT, {"columns": COLUMNS, "data": data})
        ours = model.predict(inp)
        theirs = fitted.predict(pd.DataFrame(np.asarray(data, dtype=dtype), columns=COLUMNS))
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)
        # A batch of such inputs too: predict_many's one Fortran-ordered block, as sklearn predicts it
        # (against one input's own prediction it may differ in the last bits: the BLAS tolerance).
        parts = model.predict_many([inp, inp])
        block = np.asfortranarray(np.concatenate([inp.data, inp.data]))
        np.testing.assert_array_equal(np.concatenate(parts), fitted.predict(block))


def test_nan_input_still_gets_sklearns_refusal(tmp_path: Path) -> None:
    model, _ = served(tmp_path, Ridge())
    assert uses_kernel(model)
    block = np.asfortranarray([[1.0, np.nan, 2.0, 3.0]])
    with pytest.raises(ValueError, match="NaN"):
        model._array_predict(block)  # type: ignore[misc]
    inp = model.decode(Format.SPLIT, {"columns": COLUMNS, "data": [[1.0, 2.0, 3.0, 4.0]]})
    inp.data[0, 1] = np.nan  # past the decoder, as a batch of decoded inputs could be
    with pytest.raises(ModelError):
        model.predict(inp)
    assert model.input_fault(inp) == "column(s) ['b'] have null/NaN values"


@pytest.mark.parametrize(
    "estimator",
    [
        DecisionTreeRegressor(max_depth=3),
        LogisticRegression(),
        Lasso(alpha=0.01),  # their own _decision_function
        ElasticNet(alpha=0.01),
    ],
)
def test_other_estimators_keep_their_own_predict(tmp_path: Path, estimator: Any) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(40, len(COLUMNS))), columns=COLUMNS)
    target = (frame.a > 0).astype(int) if isinstance(estimator, LogisticRegression) else frame.a * 2.0
    estimator.fit(frame, target)
    mlflow.sklearn.save_model(
        estimator,
        str(tmp_path / "m"),
        serialization_format="cloudpickle",  # skops refuses a tree's node storage unless trusted
        signature=mlflow.models.infer_signature(frame, estimator.predict(frame)),
    )
    model = load(tmp_path / "m")
    assert model._array_predict is not None  # the array path, without the kernel
    assert not uses_kernel(model)


class ShiftedRidge(Ridge):
    """A subclass of a listed class that changes what predict() computes: no kernel for it."""

    def _decision_function(self, X: Any) -> Any:
        return super()._decision_function(X) + 1.0


class Ridge2(Ridge):
    """Named like nothing listed, defined outside scikit-learn."""


def test_subclasses_keep_their_own_predict() -> None:
    x = pd.DataFrame(np.eye(4), columns=COLUMNS)
    for cls in (ShiftedRidge, Ridge2):
        assert linear(cls().fit(x, [1.0, 2.0, 3.0, 4.0]), "predict") is None
    assert linear(Ridge().fit(x, [1.0, 2.0, 3.0, 4.0]), "predict") is not None
    assert linear(Ridge().fit(x, [1.0, 2.0, 3.0, 4.0]), "predict_proba") is None
