"""A scoring script as Azure ML's examples write one: init() loads the model, run() scores a JSON body."""

import json
import logging
import os

import mlflow
import pandas as pd


def init():
    global model
    # Azure: AZUREML_MODEL_DIR is the model's folder (mlendpoints puts the model's files at its root).
    model = mlflow.pyfunc.load_model(os.environ["AZUREML_MODEL_DIR"])
    logging.info("Init complete")


def run(raw_data):
    data = json.loads(raw_data)["data"]
    columns = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    result = model.predict(pd.DataFrame(data, columns=columns))
    logging.info("Request processed")
    return {"predictions": [float(x) for x in result], "scored_by": "score.py"}
