"""The shared fixtures themselves: the models score, and the registry resolves versions and aliases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def test_models_load_and_predict(model_dirs: dict[str, Path]) -> None:
    import mlflow.pyfunc

    diabetes = mlflow.pyfunc.load_model(str(model_dirs["diabetes"]))
    X = pd.DataFrame([[0.0] * 10], columns=["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"])
    assert diabetes.predict(X).shape == (1,)
    params = mlflow.pyfunc.load_model(str(model_dirs["params"]))
    out = params.predict(pd.DataFrame({"a": [1.0], "b": [2.0]}), params={"scale": 2.0, "offset": 1.0})
    assert list(out) == [7.0]
    tensor = mlflow.pyfunc.load_model(str(model_dirs["tensor"]))
    assert list(tensor.predict(np.array([[1.0, 2.0, 3.0, 4.0]]))) == [20.0]


def test_registry_resolves_versions_and_alias(mlflow_server) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='diabetes'"))
    assert versions == [1, 2]
    assert client.get_model_version_by_alias("diabetes", "champion").version == "1"
