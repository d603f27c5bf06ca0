"""A scoring script as Azure ML's examples write one: init() loads the model, run() scores a JSON body."""

import json
import logging
import os

import mlflow
import pandas as pd


def init():
    global model
    # Azure puts a model registered from the folder `model` at AZUREML_MODEL_DIR/model; the import
    # keeps that layout (codeConfiguration.modelFolder).
    model = mlflow.pyfunc.load_model(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model"))
    logging.info("Init complete")


def run(raw_data):
    data = json.loads(raw_data)["data"]
    columns = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    result = model.predict(pd.DataFrame(data, columns=columns))
    logging.info("Request processed")
    return {"predictions": [float(x) for x in result], "scored_by": "score.py"}
