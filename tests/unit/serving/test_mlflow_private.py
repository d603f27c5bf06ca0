"""MLflow's private API, fenced in `model/mlflow_private.py`: every use there still works with the
installed MLflow, and no other data-plane module imports a private MLflow name."""

from __future__ import annotations

import ast
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from sklearn.linear_model import LinearRegression

import mlendpoints_serving
from mlendpoints_serving.model import mlflow_private

PACKAGE = Path(mlendpoints_serving.__file__).parent
FENCE = Path(mlflow_private.__file__)


def _private_mlflow_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            private = [a.name for a in node.names if a.name.startswith("_")]
            undocumented = "scoring_server" in (node.module or "")
            if private or undocumented:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} from {node.module} import ...")
        if isinstance(node, ast.Attribute) and node.attr in ("_model_impl", "_SklearnModelWrapper"):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    return found


def test_only_the_fence_touches_mlflow_private_names() -> None:
    outside = [hit for p in sorted(PACKAGE.rglob("*.py")) if p != FENCE for hit in _private_mlflow_imports(p)]
    assert outside == []
    assert _private_mlflow_imports(FENCE), "the fence itself is where they are"


def test_the_sklearn_wrapper_predicts_as_the_estimator() -> None:
    estimator = LinearRegression().fit(np.array([[0.0], [1.0]]), np.array([0.0, 2.0]))
    impl = mlflow_private.sklearn_pyfunc_impl(estimator)
    assert impl.predict(np.array([[3.0]])).tolist() == pytest.approx([6.0])


def test_a_loaded_pyfunc_exposes_its_flavor_model(diabetes_model: Path) -> None:
    pyfunc = mlflow.pyfunc.load_model(str(diabetes_model))
    assert hasattr(mlflow_private.pyfunc_impl(pyfunc), "predict")


def test_params_are_checked_against_their_schema() -> None:
    schema = ParamSchema([ParamSpec("temperature", "double", 0.5)])
    assert mlflow_private.enforce_params_schema({"temperature": 1}, schema) == {"temperature": 1.0}
    assert mlflow_private.enforce_params_schema(None, schema) == {"temperature": 0.5}
    with pytest.raises(MlflowException):
        mlflow_private.enforce_params_schema({"temperature": "hot"}, schema)


def test_json_inputs_parse_as_mlflow_serve_parses_them() -> None:
    schema = Schema([ColSpec("double", "x"), ColSpec("string", "name")])
    frame = mlflow_private.parse_json_input(
        "dataframe_split", {"columns": ["x", "name"], "data": [[1.5, "a"]]}, schema
    )
    assert isinstance(frame, pd.DataFrame) and frame.to_dict("records") == [{"x": 1.5, "name": "a"}]
