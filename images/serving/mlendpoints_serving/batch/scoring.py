"""What scores a file: the MLflow model (no-code) or a user's scoring script (Azure's batch contract).

No-code scoring goes through `mlendpoints_serving.model`, the scoring core the
model server uses too: the same signature validation and conversion, the same
fast path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from mlendpoints_serving.contract import ENV_AZUREML_BI_OUTPUT_PATH, ENV_BATCH_OUTPUT_DIR, ENV_OUTPUT_DIR
from mlendpoints_serving.model import ModelError
from mlendpoints_serving.model.core import Format
from mlendpoints_serving.scoring_script import load_scoring_script

PREDICTION = "prediction"


def predictions_frame(predictions: Any) -> pd.DataFrame:
    """A model's output as columns: one `prediction` column, or the model's own columns."""
    if isinstance(predictions, pd.DataFrame):
        return predictions.reset_index(drop=True).rename(columns=str)
    if isinstance(predictions, pd.Series):
        return pd.DataFrame({str(predictions.name or PREDICTION): predictions.to_numpy()})
    if isinstance(predictions, dict):
        return pd.DataFrame({str(k): np.asarray(v).tolist() for k, v in predictions.items()})
    arr = np.asarray(predictions)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 1:
        return pd.DataFrame({PREDICTION: arr})
    if arr.ndim == 2:
        if arr.shape[1] == 1:
            return pd.DataFrame({PREDICTION: arr[:, 0]})
        return pd.DataFrame(arr, columns=[f"{PREDICTION}_{i}" for i in range(arr.shape[1])])
    return pd.DataFrame({PREDICTION: [row.tolist() for row in arr]})


class ModelScorer:
    """The MLflow model, loaded once per worker process (or once for all, see batch/preload.py)."""

    def __init__(self, model_dir: str) -> None:
        from mlendpoints_serving.batch.preload import model_for

        self.model = model_for(model_dir)

    def table(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = predictions_frame(self.model.predict(self.model.decode(Format.FRAME, frame)))
        if len(out) != len(frame):
            raise ModelError(ValueError(f"the model returned {len(out)} predictions for {len(frame)} rows"))
        return out

    def image(self, pixels: np.ndarray[Any, Any]) -> pd.DataFrame:
        """One image, passed as a batch of one: shape (1, height, width[, channels])."""
        if self.model.columns is not None:
            raise ValueError(
                f"the model takes columns [{self.model.columns.describe()}]; an image cannot be scored by it"
            )
        batch = pixels[np.newaxis, ...]
        fmt = Format.INPUTS if self.model.tensors else Format.FRAME
        return predictions_frame(self.model.predict(self.model.decode(fmt, batch)))


class ScriptScorer:
    """A scoring script: `init()` once per worker, then `run(mini_batch)` per mini-batch."""

    def __init__(
        self, script: str, model_dir: str, output_uri: str, azureml_model_dir: str | None = None
    ) -> None:
        # A local folder of this worker's for the script's own files: committed with each mini-batch.
        self.output_dir = tempfile.mkdtemp(prefix="mlendpoints-batch-output-")
        env = {
            ENV_OUTPUT_DIR: output_uri,
            ENV_BATCH_OUTPUT_DIR: self.output_dir,
            ENV_AZUREML_BI_OUTPUT_PATH: self.output_dir,
        }
        self.module: ModuleType = load_scoring_script(
            script, model_dir, "run(mini_batch)", extra_env=env, azureml_model_dir=azureml_model_dir
        )

    def clear_output_dir(self) -> None:
        for entry in os.scandir(self.output_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)

    def run(self, paths: list[str]) -> pd.DataFrame:
        result = self.module.run(paths)
        if isinstance(result, pd.DataFrame):
            return result.reset_index(drop=True).rename(columns=str)
        if result is None or isinstance(result, str | bytes) or not hasattr(result, "__len__"):
            raise TypeError(f"run() must return a list or a DataFrame, got {type(result).__name__}")
        return pd.DataFrame({PREDICTION: list(result)})
