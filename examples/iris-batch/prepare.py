"""Writes the iris-batch example's model and input files under a folder (default build/iris-batch).

    python examples/iris-batch/prepare.py [FOLDER]

FOLDER/model: an MLflow iris classifier (4 float columns -> class 0/1/2).
FOLDER/input: iris rows split into CSV, Parquet and JSON-lines files, one in a nested
folder, and one file of a type the model cannot take (an item error, not a crash).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `examples`

from examples.models import save_iris_classifier


def main(folder: Path) -> None:
    from sklearn.datasets import load_iris

    model = save_iris_classifier(folder / "model")
    frame = load_iris(as_frame=True).data
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    inp = folder / "input"
    (inp / "2024" / "june").mkdir(parents=True, exist_ok=True)
    frame.iloc[:50].to_csv(inp / "batch-a.csv", index=False)
    frame.iloc[50:100].to_parquet(inp / "batch-b.parquet")
    frame.iloc[100:140].to_json(inp / "2024" / "june" / "batch-c.jsonl", orient="records", lines=True)
    frame.iloc[140:].to_csv(inp / "2024" / "batch-d.csv", index=False)
    (inp / "README.txt").write_text("not a table: recorded in errors.jsonl\n")
    print(f"model: {model}\ninput: {inp} ({len(frame)} rows in 4 files, and one unsupported file)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/iris-batch"))
