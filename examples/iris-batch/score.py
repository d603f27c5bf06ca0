"""A custom scoring script (Azure ML's batch contract): one row per input row, with class probabilities.

init() runs once per worker process; run() once per mini-batch, with local file paths,
and returns a DataFrame (or a list) with one element per success.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow.sklearn
import pandas as pd

model = None


def init() -> None:
    global model
    model = mlflow.sklearn.load_model(os.environ["AZUREML_MODEL_DIR"])


def run(mini_batch: list[str]) -> pd.DataFrame:
    frames = []
    for path in mini_batch:
        if not path.endswith(".csv"):
            continue  # not counted as a success: reported as a failed item
        rows = pd.read_csv(path)
        probabilities = model.predict_proba(rows)  # type: ignore[union-attr]
        frames.append(
            pd.DataFrame(
                {
                    "file_name": Path(path).name,
                    "row": range(len(rows)),
                    "label": probabilities.argmax(axis=1),
                    "confidence": probabilities.max(axis=1).round(4),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
