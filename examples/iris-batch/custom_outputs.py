"""Azure ML's "customize outputs in batch deployments": the script writes its own files.

`init()` reads the output folder from `AZUREML_BI_OUTPUT_PATH` (mlendpoints also sets it as
`MLENDPOINTS_BATCH_OUTPUT_DIR`); `run()` writes one Parquet file per input file there, the input's
rows with their predicted class, and returns the files it scored. The folder is local to the worker:
mlendpoints commits what `run()` wrote with the mini-batch, exactly once, and moves it into the
job's output folder at the end (a retried or resumed mini-batch never leaves a partial or duplicate
file). Files of other types are skipped: failed items.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

model = None
output_path = ""
READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet}


def init() -> None:
    global model, output_path
    output_path = os.environ["AZUREML_BI_OUTPUT_PATH"]
    model = mlflow.pyfunc.load_model(os.environ["AZUREML_MODEL_DIR"])


def run(mini_batch: list[str]) -> list[str]:
    scored = []
    for file_path in mini_batch:
        read = READERS.get(Path(file_path).suffix)
        if read is None:
            continue  # not returned: a failed item
        data = read(file_path)
        data["prediction"] = model.predict(data)  # type: ignore[union-attr]
        data.to_parquet(os.path.join(output_path, Path(file_path).stem + ".parquet"), index=False)
        scored.append(file_path)
    return scored
