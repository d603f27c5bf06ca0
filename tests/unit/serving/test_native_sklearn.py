"""scikit-learn models load without MLflow, predict as its flavor does, and import MLflow only when needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from mlendpoints_serving.model import load
from mlendpoints_serving.model.core import Format, _natively_loadable

SKOPS_RIDGE: dict[str, Any] = {
    "flavors": {
        "python_function": {"loader_module": "mlflow.sklearn", "model_path": "model.skops"},
        "sklearn": {"serialization_format": "skops", "code": None},
    }
}


def variant(**changes: dict[str, Any]) -> dict[str, Any]:
    flavors = {name: {**conf, **changes.get(name, {})} for name, conf in SKOPS_RIDGE["flavors"].items()}
    return {"flavors": flavors}


def test_plain_sklearn_models_load_natively() -> None:
    assert _natively_loadable(SKOPS_RIDGE)
    for fmt in ("pickle", "cloudpickle"):
        assert _natively_loadable(variant(sklearn={"serialization_format": fmt}))
    assert _natively_loadable(variant(python_function={"predict_fn": "predict_proba"}))


@pytest.mark.parametrize(
    "changes",
    [
        {"python_function": {"code": "code"}},  # its own code on sys.path: MLflow handles it
        {"sklearn": {"code": "code"}},
        {"python_function": {"data": "model.pkl"}},  # legacy layout
        {"python_function": {"loader_module": "mlflow.pyfunc.model"}},
        {"sklearn": {"serialization_format": "joblib"}},  # unknown to MLflow's flavor
        {"python_function": {"predict_fn": "transform"}},  # not a method MLflow's wrapper exposes
    ],
)
def test_anything_else_goes_through_mlflow(changes: dict[str, dict[str, Any]]) -> None:
    assert not _natively_loadable(variant(**changes))


def test_pickle_loading_turned_off_goes_through_mlflow_and_its_error(
    monkeypatch: pytest.MonkeyPatch, diabetes_model: Path
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    assert not _natively_loadable(SKOPS_RIDGE)
    with pytest.raises(Exception, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        load(diabetes_model)


@pytest.mark.parametrize("serialization_format", ["pickle", "cloudpickle"])
def test_pickled_formats_load_natively_and_predict_as_mlflow(
    tmp_path: Path, serialization_format: str
) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0.5, -1.0, 2.0]})
    estimator = LinearRegression().fit(frame, frame.x * 2 + frame.y)
    mlflow.sklearn.save_model(
        estimator,
        str(tmp_path / "m"),
        serialization_format=serialization_format,
        signature=mlflow.models.infer_signature(frame, estimator.predict(frame)),
    )
    served = load(tmp_path / "m")
    assert served.native
    rows = [[4.0, 1.0], [0.0, 0.0]]
    fast = served.predict(served.decode(Format.SPLIT, {"columns": ["x", "y"], "data": rows}))
    reference = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(pd.DataFrame(rows, columns=["x", "y"]))
    np.testing.assert_array_equal(fast, reference)


# In a fresh interpreter: scoring imports no MLflow; the first use of MLflow's view imports it
# and gives the same signature MLflow reads.
PROBE = """
import json, sys
from mlendpoints_serving.model import load
from mlendpoints_serving.model.core import Format, dumps, jsonable
served = load(sys.argv[1])
split = served.input_example["dataframe_split"]
out = dumps(jsonable(served.predict(served.decode(Format.SPLIT, split))))
before = "mlflow" in sys.modules
schema = served.input_schema.to_json()
print(json.dumps({"native": served.native, "mlflow_before": before,
                  "mlflow_after": "mlflow" in sys.modules, "schema": schema,
                  "predictions": json.loads(out),
                  "pyfunc": served.pyfunc.predict(served.frame(served.decode(Format.SPLIT, split))).tolist(),
                  }))
"""


@pytest.mark.parametrize("name", ["diabetes", "iris"])
def test_scoring_imports_no_mlflow_until_its_view_is_asked_for(
    model_dirs: dict[str, Path], name: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(model_dirs[name])], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["native"] is True
    assert result["mlflow_before"] is False
    assert result["mlflow_after"] is True
    assert result["schema"] == mlflow.models.Model.load(str(model_dirs[name])).get_input_schema().to_json()
    assert result["predictions"] == result["pyfunc"]


def test_pyfunc_models_are_still_loaded_by_mlflow(params_model: Path, tensor_model: Path) -> None:
    for path in (params_model, tensor_model):
        served = load(path)
        assert not served.native
        assert served.pyfunc is served.loaded_pyfunc
