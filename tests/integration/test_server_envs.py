"""`--env-manager virtualenv`: a venv built offline from the model's requirements (find-links wheelhouse)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.serving.support import serve

pytestmark = pytest.mark.slow


def build_wheel(wheelhouse: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel, written directly (a wheel is a zip with dist-info metadata)."""
    files = {
        f"{name}/__init__.py": source,
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    wheel = wheelhouse / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def save_model_needing(dest: Path, requirement: str) -> Path:
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    class UsesDependency(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            import mlendpoints_tinydep

            return (model_input["a"] + mlendpoints_tinydep.OFFSET).to_numpy()

    example = pd.DataFrame({"a": [1.0]})
    signature = infer_signature(example, example["a"].to_numpy())
    mlflow.pyfunc.save_model(str(dest), python_model=UsesDependency(), signature=signature)
    (dest / "requirements.txt").write_text(requirement + "\n")
    return dest


def test_virtualenv_is_built_from_the_wheelhouse_cached_and_served_from(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    build_wheel(wheelhouse, "mlendpoints_tinydep", "1.0", "OFFSET = 41.0\n")
    model = save_model_needing(tmp_path / "model", "mlendpoints_tinydep==1.0")
    cache = tmp_path / "envs"
    env = {"PIP_FIND_LINKS": str(wheelhouse), "PIP_NO_INDEX": "1"}
    args = ("--env-manager", "virtualenv", "--env-cache-dir", str(cache))
    body = {"input_data": {"columns": ["a"], "data": [[1.0], [2.5]]}}
    for attempt in ("first", "second"):
        with serve(model, tmp_path / f"{attempt}.log", *args, env=env, timeout=300) as server:
            assert server.client().post("/score", json=body).json() == [42.0, 43.5]
    envs = [p for p in cache.iterdir() if (p / ".complete").is_file()]
    assert len(envs) == 1
    assert "building model environment" in (tmp_path / "first.log").read_text()
    assert "reusing model environment" in (tmp_path / "second.log").read_text()
