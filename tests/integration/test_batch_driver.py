"""The batch driver on real files and worker processes: formats, output, retries, threshold, instances."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from mlendpoints_serving.batch.failures import JobFailed
from mlendpoints_serving.batch.job import run
from tests.integration.batch_support import (
    diabetes_rows,
    flags,
    run_driver,
    save_mean_pixel_model,
    settings,
    write_csvs,
    write_pngs,
)


def predictions(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "predictions.csv")


def errors(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def reference(model: Path, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(mlflow.pyfunc.load_model(str(model)).predict(frame), dtype=np.float64)


@pytest.fixture(scope="session")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_mean_pixel_model(tmp_path_factory.mktemp("models") / "mean_pixel")


def test_tables_of_every_format_in_nested_folders_score_in_sorted_order(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "sub" / "deeper").mkdir(parents=True)
    frames = {
        "a.csv": diabetes_rows(30, 1),
        "sub/b.parquet": diabetes_rows(20, 2),
        "sub/deeper/c.jsonl": diabetes_rows(5, 3),
    }
    frames["a.csv"].to_csv(inp / "a.csv", index=False)
    frames["sub/b.parquet"].to_parquet(inp / "sub" / "b.parquet")
    frames["sub/deeper/c.jsonl"].to_json(inp / "sub" / "deeper" / "c.jsonl", orient="records", lines=True)
    # JSON keeps 10 significant digits: the reference scores what the file holds
    frames["sub/deeper/c.jsonl"] = pd.read_json(inp / "sub" / "deeper" / "c.jsonl", lines=True)
    (inp / "notes.txt").write_text("not a table")

    result = run(settings(diabetes_model, inp, out, mini_batch_size=2, max_concurrency=2))

    got = predictions(out)
    assert list(got.columns) == ["row", "prediction", "file_name"]
    assert list(dict.fromkeys(got["file_name"])) == ["a.csv", "sub/b.parquet", "sub/deeper/c.jsonl"]
    for name, frame in frames.items():
        rows = got[got["file_name"] == name]
        assert rows["row"].tolist() == list(range(len(frame)))
        np.testing.assert_allclose(
            rows["prediction"].to_numpy(), reference(diabetes_model, frame), rtol=1e-12
        )
    [error] = errors(out)
    assert error["file_name"] == "notes.txt" and "unsupported file type '.txt'" in str(error["error"])
    assert summary(out)["items"] == {"total": 4, "succeeded": 3, "failed": 1}
    assert summary(out)["miniBatches"] == {"total": 2, "succeeded": 2, "failed": 0}
    assert result.rows == 55 and summary(out)["rows"] == 55
    status = json.loads((out / "_parts" / "status-0.json").read_text())
    assert status["phase"] == "Succeeded" and status["items"]["succeeded"] == 3
    assert not list((out / "_parts").glob("part-*.csv")), "row parts are removed once merged"


def test_a_file_that_does_not_fit_the_signature_is_an_item_error(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_csvs(inp, 2, 10)
    diabetes_rows(10, 9).drop(columns=["bmi"]).to_csv(inp / "part-001.csv", index=False)

    run(settings(diabetes_model, inp, out))

    [error] = errors(out)
    assert error["file_name"] == "part-001.csv" and "bmi" in str(error["error"])
    assert predictions(out)["file_name"].unique().tolist() == ["part-000.csv"]


def test_existing_output_is_never_overwritten(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_csvs(inp, 1, 5)
    out.mkdir()
    (out / "predictions.csv").write_text("precious\n")
    term = tmp_path / "termination-log"

    proc = run_driver(flags(diabetes_model, inp, out), env={"MLENDPOINTS_TERMINATION_LOG": str(term)})

    assert proc.returncode == 1
    assert "mlendpoints-batch failed: OutputExists" in proc.stderr
    assert term.read_text().startswith("mlendpoints-batch failed: OutputExists")
    assert (out / "predictions.csv").read_text() == "precious\n"


def test_a_finished_job_reruns_as_a_no_op_and_another_job_is_refused(
    diabetes_model: Path, iris_model: Path, tmp_path: Path
):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_csvs(inp, 2, 5)
    run(settings(diabetes_model, inp, out))
    before = (out / "predictions.csv").read_bytes(), (out / "summary.json").read_bytes()

    again = run(settings(diabetes_model, inp, out))  # e.g. a pod restarted after finishing
    assert again.phase == "Succeeded"
    assert ((out / "predictions.csv").read_bytes(), (out / "summary.json").read_bytes()) == before

    with pytest.raises(JobFailed) as failed:
        run(settings(iris_model, inp, out))
    assert failed.value.reason == "OutputExists"
    (inp / "new.csv").write_text((inp / "part-000.csv").read_text())
    with pytest.raises(JobFailed, match="different job"):
        run(settings(diabetes_model, inp, out))


def test_summary_only_writes_no_rows(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_csvs(inp, 3, 5)
    run(settings(diabetes_model, inp, out, output_action="summaryOnly"))
    assert sorted(p.name for p in out.iterdir()) == ["_parts", "errors.jsonl", "summary.json"]
    assert summary(out)["items"] == {"total": 3, "succeeded": 3, "failed": 0}
    assert (out / "errors.jsonl").read_text() == ""


def test_large_files_are_streamed_in_chunks_with_the_same_output(diabetes_model: Path, tmp_path: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    big = diabetes_rows(12_000, 5)  # about 2.3 MB of CSV: 3 chunks of 1 MiB
    big.to_csv(inp / "big.csv", index=False)
    big.to_parquet(inp / "big.parquet", row_group_size=1000)
    big.to_json(inp / "big.jsonl", orient="records", lines=True)

    run(settings(diabetes_model, inp, tmp_path / "whole", output_file_name="p.csv"))
    run(settings(diabetes_model, inp, tmp_path / "chunked", chunk_mb=1, output_file_name="p.csv"))

    whole = (tmp_path / "whole" / "p.csv").read_bytes()
    assert whole == (tmp_path / "chunked" / "p.csv").read_bytes()
    got = pd.read_csv(tmp_path / "chunked" / "p.csv")
    assert len(got) == 3 * len(big)
    rows = got[got["file_name"] == "big.csv"]
    assert rows["row"].tolist() == list(range(len(big)))
    np.testing.assert_allclose(rows["prediction"].to_numpy(), reference(diabetes_model, big), rtol=1e-12)


def test_images_are_scored_as_arrays(image_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    means = write_pngs(inp, 5)
    (inp / "broken.png").write_bytes(b"not a png")

    run(settings(image_model, inp, out, mini_batch_size=2))

    got = predictions(out)
    assert got["file_name"].tolist() == sorted(means)
    assert got["row"].tolist() == [0] * 5
    np.testing.assert_allclose(got["prediction"].to_numpy(), [means[n] for n in sorted(means)])
    [error] = errors(out)
    assert error["file_name"] == "broken.png" and "not a readable image" in str(error["error"])


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "score.py"
    path.write_text(textwrap.dedent(body))
    return path


SCRIPT = """
import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

model = None


def init():
    global model
    model = mlflow.pyfunc.load_model(os.environ["AZUREML_MODEL_DIR"])
    assert os.environ["MLENDPOINTS_MODEL_DIR"] == os.environ["AZUREML_MODEL_DIR"]
    out = Path(os.environ["MLENDPOINTS_OUTPUT_DIR"]) / "inits"
    out.mkdir(exist_ok=True)
    (out / str(os.getpid())).touch()


def run(mini_batch):
    rows = []
    for path in mini_batch:
        frame = pd.read_csv(path)
        total = float(model.predict(frame).sum())
        rows.append({"file": os.path.basename(path), "rows": len(frame), "total": total})
    return pd.DataFrame(rows)
"""


def test_custom_scoring_script(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    paths = write_csvs(inp, 5, 7)

    run(
        settings(
            diabetes_model,
            inp,
            out,
            scoring_script=str(_script(tmp_path, SCRIPT)),
            mini_batch_size=2,
            max_concurrency=2,
        )
    )

    got = predictions(out)
    assert list(got.columns) == ["file", "rows", "total"]
    assert got["file"].tolist() == [p.name for p in paths]
    expected = [reference(diabetes_model, pd.read_csv(p)).sum() for p in paths]
    np.testing.assert_allclose(got["total"].to_numpy(), expected, rtol=1e-12)
    assert 1 <= len(list((out / "inits").iterdir())) <= 2, "init() runs once per worker"
    assert summary(out)["items"] == {"total": 5, "succeeded": 5, "failed": 0}


def test_a_script_returning_fewer_results_fails_the_rest(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_csvs(inp, 3, 2)
    script = _script(
        tmp_path,
        """
        def run(mini_batch):
            return [len(mini_batch)]
    """,
    )
    run(settings(diabetes_model, inp, out, scoring_script=str(script), mini_batch_size=3))
    assert summary(out)["items"] == {"total": 3, "succeeded": 1, "failed": 2}
    assert [e["file_name"] for e in errors(out)] == [None, None]
    assert "returned 1 results for 3 files" in str(errors(out)[0]["error"])


FLAKY = """
import os
import time
from pathlib import Path
from typing import Any

STATE = Path(os.environ["MLENDPOINTS_OUTPUT_DIR"]).parent / "attempts"


def run(mini_batch):
    STATE.mkdir(exist_ok=True)
    marker = STATE / Path(mini_batch[0]).name
    first = not marker.exists()
    marker.touch()
    if first and "{mode}" == "raise":
        raise RuntimeError("transient failure")
    if first and "{mode}" == "hang":
        time.sleep(60)
    if "{mode}" == "always":
        raise RuntimeError("boom")
    return [Path(p).name for p in mini_batch]
"""


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_a_mini_batch_that_raises_or_times_out_is_retried(diabetes_model: Path, tmp_path: Path, mode: str):
    inp, out = tmp_path / "in", tmp_path / "out"
    paths = write_csvs(inp, 4, 2)
    script = _script(tmp_path, FLAKY.replace("{mode}", mode))

    run(
        settings(
            diabetes_model,
            inp,
            out,
            scoring_script=str(script),
            mini_batch_size=2,
            max_concurrency=2,
            retry_timeout=4,
            max_retries=2,
        )
    )

    assert predictions(out)["prediction"].tolist() == [p.name for p in paths]
    manifests = [json.loads(p.read_text()) for p in sorted((out / "_parts").glob("part-*.json"))]
    assert [m["attempts"] for m in manifests] == [2, 2]
    assert summary(out)["items"] == {"total": 4, "succeeded": 4, "failed": 0}


def test_exhausted_retries_record_every_item_as_failed(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    paths = write_csvs(inp, 3, 2)
    script = _script(tmp_path, FLAKY.replace("{mode}", "always"))

    run(settings(diabetes_model, inp, out, scoring_script=str(script), mini_batch_size=2, max_retries=1))

    assert [e["file_name"] for e in errors(out)] == [p.name for p in paths]
    assert "failed after 2 attempts: RuntimeError: boom" in str(errors(out)[0]["error"])
    assert summary(out)["miniBatches"] == {"total": 2, "succeeded": 0, "failed": 2}
    assert (out / "predictions.csv").read_text() == ""


def test_more_failures_than_the_threshold_stop_the_job(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_csvs(inp, 2, 5)
    for i in range(5):
        (inp / f"z-{i}.txt").write_text("unsupported")

    with pytest.raises(JobFailed) as failed:
        run(settings(diabetes_model, inp, out, error_threshold=2, mini_batch_size=1))

    assert failed.value.reason == "ErrorThresholdExceeded"
    result = summary(out)
    assert result["phase"] == "Failed" and result["reason"] == "ErrorThresholdExceeded"
    assert result["items"]["failed"] == 3, "stops at the first failure over the threshold"
    assert len(errors(out)) == 3
    assert not (out / "predictions.csv").exists()

    run(settings(diabetes_model, inp, tmp_path / "never", error_threshold=-1, mini_batch_size=1))
    assert summary(tmp_path / "never")["items"]["failed"] == 5


def test_two_instances_write_the_same_bytes_as_one(diabetes_model: Path, tmp_path: Path):
    inp = tmp_path / "in"
    write_csvs(inp, 7, 50)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_driver(flags(diabetes_model, inp, one, "--mini-batch-size", "2")).returncode == 0

    base = flags(diabetes_model, inp, two, "--mini-batch-size", "2", "--instance-count", "2")
    early = run_driver([*base, "--phase", "merge"])
    assert early.returncode == 1 and "NothingToMerge" in early.stderr
    first = run_driver([*base, "--phase", "score", "--instance-index", "0"])
    assert first.returncode == 0, first.stderr
    partial = run_driver([*base, "--phase", "merge"])
    assert partial.returncode == 1 and "PartsMissing" in partial.stderr
    second = run_driver([*base, "--phase", "score"], env={"JOB_COMPLETION_INDEX": "1"})
    assert second.returncode == 0, second.stderr
    term = tmp_path / "termination-log"
    merged = run_driver([*base, "--phase", "merge"], env={"MLENDPOINTS_TERMINATION_LOG": str(term)})
    assert merged.returncode == 0, merged.stderr
    reported = json.loads(term.read_text())  # what the operator reads: the summary, without the data
    assert reported["phase"] == "Succeeded" and reported["items"] == {"total": 7, "succeeded": 7, "failed": 0}

    assert (two / "predictions.csv").read_bytes() == (one / "predictions.csv").read_bytes()
    statuses = [json.loads((two / "_parts" / f"status-{i}.json").read_text()) for i in (0, 1)]
    assert [s["miniBatches"]["total"] for s in statuses] == [2, 2]
    assert sum(s["items"]["succeeded"] for s in statuses) == 7
