"""`mlendpoints batch run` on real files: the iris model, CSV files, the real driver as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

CLI = str(Path(sys.executable).parent / "mlendpoints")
FILES = {"a.csv": (0, 40), "b.csv": (40, 90), "nested/c.csv": (90, 150)}  # name -> iris rows [start, end)


def batch_run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLENDPOINTS_LOCAL_HOME": str(home)}
    return subprocess.run([CLI, "batch", "run", *args], env=env, capture_output=True, text=True, timeout=240)


def iris_frame() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).data
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.fixture
def csv_input(tmp_path: Path) -> Path:
    folder = tmp_path / "input"
    frame = iris_frame()
    for name, (start, end) in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        frame.iloc[start:end].to_csv(folder / name, index=False)
    return folder


def expected_rows(iris_model: Path) -> pd.DataFrame:
    """Every input row once, files in sorted order, rows in file order, as the model predicts them."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(iris_model))
    frame = iris_frame()
    parts = []
    for name in sorted(FILES):
        start, end = FILES[name]
        rows = frame.iloc[start:end].reset_index(drop=True)
        parts.append(
            pd.DataFrame({"row": range(len(rows)), "prediction": model.predict(rows), "file_name": name})
        )
    return pd.concat(parts, ignore_index=True)


def test_run_scores_every_row_once_in_order(iris_model: Path, csv_input: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = batch_run(
        "--model", str(iris_model), "--input", str(csv_input), "--output", str(out),
        "--mini-batch-size", "2", "--max-concurrency", "2", home=tmp_path / "home",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Succeeded: 3 of 3 items scored, 0 failed, in 2 mini-batches" in done.stdout
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["row", "prediction", "file_name"]
    pd.testing.assert_frame_equal(predictions, expected_rows(iris_model), check_dtype=False)
    # Running it again changes nothing: the job is finished and its output is kept.
    before = (out / "predictions.csv").read_bytes()
    again = batch_run(
        "-m", str(iris_model), "-i", str(csv_input), "-o", str(out), "--mini-batch-size", "2",
        "--max-concurrency", "2", home=tmp_path / "home",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (out / "predictions.csv").read_bytes() == before


def test_output_format_and_partitioning_flags_reach_the_driver(
    iris_model: Path, csv_input: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = batch_run(
        "-m", str(iris_model), "-i", str(csv_input), "-o", str(out), "--output-format", "parquet",
        "--partition-outputs", home=tmp_path / "home",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"output: {out / 'predictions'}" in done.stdout
    expected = expected_rows(iris_model)
    for name in FILES:
        got = pd.read_parquet(out / "predictions" / name.replace(".csv", ".parquet"))
        want = expected[expected["file_name"] == name].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # the same with --set, one jsonl file
    done = batch_run(
        "-m", str(iris_model), "-i", str(csv_input), "-o", str(tmp_path / "out2"),
        "--set", "outputFormat=jsonl", home=tmp_path / "home",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = pd.read_json(tmp_path / "out2" / "predictions.jsonl", lines=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_a_model_uri_is_fetched_and_gives_the_same_output(
    iris_model: Path, csv_input: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    outputs: list[bytes] = []
    for model in (str(iris_model), iris_model.as_uri()):
        out = tmp_path / f"out-{len(outputs)}"
        done = batch_run("-m", model, "-i", str(csv_input), "-o", str(out), home=home)
        assert done.returncode == 0, done.stderr
        outputs.append((out / "predictions.csv").read_bytes())
    assert outputs[0] == outputs[1]
    cached = [p.parent for p in (home / "models").glob("*/MLmodel")]
    assert len(cached) == 1  # the URI was fetched into the local model cache


def test_set_reaches_the_driver_and_a_failed_job_exits_non_zero(
    iris_model: Path, csv_input: Path, tmp_path: Path
) -> None:
    (csv_input / "notes.txt").write_text("not a table\n")
    out = tmp_path / "out"
    common = ("-m", str(iris_model), "-i", str(csv_input), "--set", "outputFileName=scores.csv")
    done = batch_run(*common, "-o", str(out), "--set", "errorThreshold=0", home=tmp_path / "home")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-2:] == [
        "error: the batch job failed: ErrorThresholdExceeded: "
        "1 items failed, more than the error threshold 0",
        f"hint: every failed item and why: {out}/errors.jsonl",
    ]
    assert "notes.txt" in (out / "errors.jsonl").read_text()
    assert not (out / "scores.csv").exists()
    # Tolerating the failure, the rows file takes the name given with --set.
    done = batch_run(*common, "-o", str(tmp_path / "out2"), home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert "Succeeded: 3 of 4 items scored, 1 failed" in done.stdout
    assert len(pd.read_csv(tmp_path / "out2" / "scores.csv")) == 150


def test_the_iris_batch_example_runs_as_its_readme_says(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "iris-batch"
    build = tmp_path / "iris-batch"
    prepared = subprocess.run(
        [sys.executable, str(example / "prepare.py"), str(build)], capture_output=True, text=True
    )
    assert prepared.returncode == 0, prepared.stderr
    common = ("--model", str(build / "model"), "--input", str(build / "input"))
    done = batch_run(
        *common, "--output", str(build / "out"), "--mini-batch-size", "2", "--max-concurrency", "2",
        home=tmp_path / "home",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Succeeded: 4 of 5 items scored, 1 failed, in 3 mini-batches" in done.stdout
    assert len(pd.read_csv(build / "out" / "predictions.csv")) == 150
    script = batch_run(
        *common, "--output", str(build / "out-script"), "--scoring-script", str(example / "score.py"),
        home=tmp_path / "home",
    )  # fmt: skip
    assert script.returncode == 0, script.stderr
    rows = pd.read_csv(build / "out-script" / "predictions.csv")
    assert list(rows.columns) == ["file_name", "row", "label", "confidence"] and len(rows) == 60
