"""Helpers for the batch driver tests: input files, an image model, the driver as a process, S3 (moto)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from examples.models import diabetes_frame
from mlendpoints_serving.batch.settings import BatchSettings
from tests.fixtures.servers import free_port, running

DRIVER = [sys.executable, "-m", "mlendpoints_serving.batch.cli"]


def diabetes_rows(n: int, seed: int) -> pd.DataFrame:
    """`n` rows resampled from the diabetes dataset."""
    features, _ = diabetes_frame()
    rng = np.random.default_rng(seed)
    return features.iloc[rng.integers(0, len(features), n)].reset_index(drop=True)


def write_csvs(folder: Path, files: int, rows: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = folder / f"part-{i:03d}.csv"
        diabetes_rows(rows, seed + i).to_csv(path, index=False)
        paths.append(path)
    return paths


def settings(model: Path, inp: Path | str, out: Path | str, **kw: Any) -> BatchSettings:
    return BatchSettings(model_dir=str(model), input=str(inp), output=str(out), **kw)


def flags(model: Path, inp: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["--model-dir", str(model), "--input", str(inp), "--output", str(out), *extra]


def run_driver(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """The driver as a process; its termination message goes nowhere unless `env` names a file."""
    full_env = {**os.environ, "MLENDPOINTS_TERMINATION_LOG": os.devnull, **(env or {})}
    return subprocess.run(
        [*DRIVER, *args], env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def save_mean_pixel_model(dest: Path) -> Path:
    """A pyfunc: a batch of RGB images (uint8, shape (-1, -1, -1, 3)) -> each image's mean pixel."""
    import mlflow.pyfunc
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    if (dest / "MLmodel").exists():
        return dest

    class MeanPixel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            arr = np.asarray(model_input, dtype=np.float64)
            return arr.reshape(len(arr), -1).mean(axis=1)

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))]),
    )
    mlflow.pyfunc.save_model(str(dest), python_model=MeanPixel(), signature=signature)
    return dest


def write_pngs(folder: Path, count: int) -> dict[str, float]:
    """Tiny RGB PNGs of one flat colour each; returns file name -> mean pixel value."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    means = {}
    for i in range(count):
        colour = (10 * i, 20 + i, 200 - 5 * i)
        Image.new("RGB", (4 + i, 3), colour).save(folder / f"img-{i}.png")
        means[f"img-{i}.png"] = float(np.mean(colour))
    return means


@contextlib.contextmanager
def moto_s3(log: Path) -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto in server mode, a subprocess); yields the env that points at it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(
        [sys.executable, "-m", "moto.server", "-p", str(port)], ready_url=f"{url}/moto-api/", log=log
    ):
        yield {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
