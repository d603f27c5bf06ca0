"""Azure's batch contract: init() once per worker, run(mini_batch) with a list of file paths."""

import os

import pandas as pd


def init():
    global model_dir
    model_dir = os.environ["AZUREML_MODEL_DIR"]


def run(mini_batch):
    return pd.DataFrame(
        {
            "file": [os.path.basename(path) for path in mini_batch],
            "size": [os.path.getsize(p) for p in mini_batch],
        }
    )
