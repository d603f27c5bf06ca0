"""Small, real MLflow models built from datasets that ship with scikit-learn.

Used by the test fixtures, the benchmarks, the examples and `make demo`, so all
of them score the same models. Each builder saves an MLflow model directory
(with signature and input example) and returns its path.

    python -m examples.models DEST   # writes every model under DEST
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _fresh(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists() and (dest / "MLmodel").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def diabetes_frame() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True)
    return data.data, data.target


def save_diabetes_regressor(dest: Path, alpha: float = 1.0) -> Path:
    """Ridge regression on the diabetes dataset (10 float columns -> 1 float)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import Ridge

    dest = Path(dest)
    if (dest / "MLmodel").exists():
        return dest
    X, y = diabetes_frame()
    model = Ridge(alpha=alpha).fit(X, y)
    example = X.head(3)
    signature = infer_signature(example, model.predict(example))
    mlflow.sklearn.save_model(model, str(_fresh(dest)), signature=signature, input_example=example)
    return dest


def save_iris_classifier(dest: Path) -> Path:
    """Logistic regression on iris (4 float columns -> class label 0/1/2)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    dest = Path(dest)
    if (dest / "MLmodel").exists():
        return dest
    data = load_iris(as_frame=True)
    X = data.data
    X.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in X.columns]
    model = LogisticRegression(max_iter=500).fit(X, data.target)
    example = X.head(3)
    signature = infer_signature(example, model.predict(example))
    mlflow.sklearn.save_model(model, str(_fresh(dest)), signature=signature, input_example=example)
    return dest


def save_params_model(dest: Path) -> Path:
    """Custom pyfunc with a params schema (scale: double=1.0, offset: double=0.0)."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    dest = Path(dest)
    if (dest / "MLmodel").exists():
        return dest

    # Defined locally so cloudpickle stores it by value: the model loads
    # where this module is not importable (the serving image).
    class ScaledSum(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            params = params or {}
            scale = float(params.get("scale", 1.0))
            offset = float(params.get("offset", 0.0))
            return (model_input.sum(axis=1) * scale + offset).to_numpy()

    example = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    signature = infer_signature(example, np.array([4.0, 6.0]), params={"scale": 1.0, "offset": 0.0})
    mlflow.pyfunc.save_model(
        str(_fresh(dest)), python_model=ScaledSum(), signature=signature, input_example=example
    )
    return dest


def save_tensor_model(dest: Path) -> Path:
    """A tensor-signature model: float64 array of shape (-1, 4) -> (-1,) (row sums, scaled by 2)."""
    import mlflow.pyfunc
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    dest = Path(dest)
    if (dest / "MLmodel").exists():
        return dest

    class RowSum(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return np.asarray(model_input, dtype=np.float64).sum(axis=1) * 2.0

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 4))]),
        outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))]),
    )
    example = np.array([[1.0, 2.0, 3.0, 4.0]])
    mlflow.pyfunc.save_model(
        str(_fresh(dest)), python_model=RowSum(), signature=signature, input_example=example
    )
    return dest


BUILDERS = {
    "diabetes": save_diabetes_regressor,
    "iris": save_iris_classifier,
    "params": save_params_model,
    "tensor": save_tensor_model,
}


def build_all(root: Path) -> dict[str, Path]:
    return {name: build(Path(root) / name) for name, build in BUILDERS.items()}


if __name__ == "__main__":
    out = build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "build/models"))
    for name, path in out.items():
        print(f"{name}: {path}")
