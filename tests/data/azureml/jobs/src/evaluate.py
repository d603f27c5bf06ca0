"""Score a CSV with an MLflow model and write the predictions (an Azure command job's script)."""

import argparse
import pathlib

import mlflow.pyfunc
import pandas as pd

parser = argparse.ArgumentParser()
parser.add_argument("--model")
parser.add_argument("--data")
parser.add_argument("--alpha", type=float)
parser.add_argument("--out")
args = parser.parse_args()
predictions = mlflow.pyfunc.load_model(args.model).predict(pd.read_csv(args.data))
pathlib.Path(args.out, "scores.csv").write_text("\n".join(str(p * args.alpha) for p in predictions))
