"""Customised batch outputs: the rows file's format, one file per input, a script's own files.

Real driver processes (or `job.run` in this process, which forks real workers) on real files.
Every format is read back and compared row by row with `pyfunc.predict` on the same input.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from mlendpoints_serving.batch.failures import JobFailed
from mlendpoints_serving.batch.job import run
from tests.integration.batch_support import DRIVER, diabetes_rows, flags, run_driver, settings


def _inputs(folder: Path) -> dict[str, pd.DataFrame]:
    """Nested csv and parquet inputs (parquet keeps every digit, so the reference scores the same)."""
    frames = {
        "a.csv": diabetes_rows(7, 1),
        "sub/b.parquet": diabetes_rows(5, 2),
        "sub/c.csv": diabetes_rows(3, 3),
        "z.csv": diabetes_rows(4, 4),
    }
    for name, frame in frames.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".csv"):
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path)
    # what the csv files hold (the reference scores exactly that)
    return {n: pd.read_csv(folder / n) if n.endswith(".csv") else f for n, f in frames.items()}


def _read(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)


def _expected(model: Path, frames: dict[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    pyfunc = mlflow.pyfunc.load_model(str(model))
    return {name: np.asarray(pyfunc.predict(frame), dtype=np.float64) for name, frame in frames.items()}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_each_format_reads_back_row_by_row_as_pyfunc_predict(diabetes_model: Path, tmp_path: Path, fmt: str):
    inp, out = tmp_path / "in", tmp_path / "out"
    frames = _inputs(inp)

    result = run(settings(diabetes_model, inp, out, mini_batch_size=2, max_concurrency=2, output_format=fmt))

    name = "predictions.csv" if fmt == "csv" else f"predictions.{fmt}"
    assert result.output == str(out / name)
    got = _read(out / name, fmt)
    assert list(got.columns) == ["row", "prediction", "file_name"]
    assert list(dict.fromkeys(got["file_name"])) == sorted(frames)
    expected = _expected(diabetes_model, frames)
    for file_name, frame in frames.items():
        rows = got[got["file_name"] == file_name]
        assert rows["row"].tolist() == list(range(len(frame)))
        if fmt == "csv":  # Arrow's CSV writer keeps 17 significant digits
            np.testing.assert_allclose(rows["prediction"].to_numpy(), expected[file_name], rtol=1e-15)
        else:  # parquet and JSON's shortest round-trip floats: the very same numbers
            assert rows["prediction"].tolist() == expected[file_name].tolist()
    assert result.rows == 19
    assert not [p.name for p in (out / "_parts").iterdir() if not p.name.endswith(".json")]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_partition_outputs_writes_one_file_per_input_mirroring_its_path(
    diabetes_model: Path, tmp_path: Path, fmt: str
):
    inp, out = tmp_path / "in", tmp_path / "out"
    frames = _inputs(inp)

    result = run(
        settings(diabetes_model, inp, out, mini_batch_size=3, output_format=fmt, partition_outputs=True)
    )

    folder = out / "predictions"
    assert result.output == str(folder)
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == [f"{Path(n).with_suffix('')}.{fmt}" for n in sorted(frames)]
    expected = _expected(diabetes_model, frames)
    for file_name, frame in frames.items():
        got = _read(folder / f"{Path(file_name).with_suffix('')}.{fmt}", fmt)
        assert got["row"].tolist() == list(range(len(frame)))
        assert set(got["file_name"]) == {file_name}
        np.testing.assert_allclose(got["prediction"].to_numpy(), expected[file_name], rtol=1e-15)
    assert not (out / "predictions.csv").exists()
    assert not [p for p in (out / "_parts").iterdir() if p.is_dir()], "attempt folders are removed"


@pytest.mark.parametrize("partitioned", [False, True])
def test_azures_header_less_csv_reads_back_with_named_columns(
    diabetes_model: Path, tmp_path: Path, partitioned: bool
):
    inp, out = tmp_path / "in", tmp_path / "out"
    frames = _inputs(inp)
    extra = ["--no-output-header", "--mini-batch-size", "3"] + (
        ["--partition-outputs"] if partitioned else []
    )

    proc = run_driver(flags(diabetes_model, inp, out, *extra))

    assert proc.returncode == 0, proc.stderr
    expected = _expected(diabetes_model, frames)
    names = ["row", "prediction", "file_name"]  # as Azure's examples read predictions.csv
    if partitioned:
        parts = {n: out / "predictions" / Path(n).with_suffix(".csv") for n in frames}
    else:
        parts = {"": out / "predictions.csv"}
    got = pd.concat([pd.read_csv(path, names=names) for path in parts.values()])
    assert "row" not in got["row"].astype(str).tolist(), "no header line"
    assert len(got) == sum(len(f) for f in frames.values())
    for file_name, frame in frames.items():
        rows = got[got["file_name"] == file_name]
        assert rows["row"].tolist() == list(range(len(frame)))
        np.testing.assert_allclose(rows["prediction"].to_numpy(), expected[file_name], rtol=1e-15)


def test_partitioned_names_that_collide_are_refused(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    diabetes_rows(2, 0).to_csv(inp / "a.csv", index=False)
    diabetes_rows(2, 0).to_parquet(inp / "a.parquet")

    with pytest.raises(JobFailed) as err:
        run(settings(diabetes_model, inp, out, output_format="parquet", partition_outputs=True))
    assert err.value.reason == "InvalidSettings" and "would both write 'a.parquet'" in err.value.message
    assert not out.exists()


# Azure's "customize outputs in batch deployments" example, as Azure's docs write it.
AZURE_SCRIPT = """
    import os
    import time
    from pathlib import Path

    import mlflow
    import pandas as pd


    def init():
        global model, output_path
        output_path = os.environ["AZUREML_BI_OUTPUT_PATH"]
        assert output_path == os.environ["MLENDPOINTS_BATCH_OUTPUT_DIR"]
        model = mlflow.pyfunc.load_model(os.environ["AZUREML_MODEL_DIR"])


    def run(mini_batch):
        for file_path in mini_batch:
            data = pd.read_csv(file_path)
            data["prediction"] = model.predict(data)
            data.to_parquet(os.path.join(output_path, Path(file_path).stem + ".parquet"))
            time.sleep(float(os.environ.get("SLOW_SCRIPT_S", "0")))
        return mini_batch
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "code" / "batch_driver.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(AZURE_SCRIPT))
    return path


def _csv_inputs(folder: Path, count: int) -> dict[str, pd.DataFrame]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = {}
    for i in range(count):
        diabetes_rows(6, i).to_csv(folder / f"file-{i:02d}.csv", index=False)
        frames[f"file-{i:02d}.csv"] = pd.read_csv(folder / f"file-{i:02d}.csv")
    return frames


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.parquet")}


def test_an_azure_style_script_writes_parquet_per_input_file(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    frames = _csv_inputs(inp, 5)
    script = _script(tmp_path)

    status = run(
        settings(
            diabetes_model, inp, out, scoring_script=str(script), mini_batch_size=2,
            max_concurrency=2, output_action="summaryOnly",
        )
    )  # fmt: skip

    assert status.items.succeeded == 5
    assert sorted(_files(out)) == [f"file-{i:02d}.parquet" for i in range(5)]
    expected = _expected(diabetes_model, frames)
    for name, frame in frames.items():
        got = pd.read_parquet(out / name.replace(".csv", ".parquet"))
        pd.testing.assert_frame_equal(got.drop(columns="prediction"), frame)
        assert got["prediction"].tolist() == expected[name].tolist()
    manifests = [json.loads(p.read_text()) for p in sorted((out / "_parts").glob("part-*.json"))]
    assert [m["outputs"] for m in manifests] == [
        ["file-00.parquet", "file-01.parquet"], ["file-02.parquet", "file-03.parquet"], ["file-04.parquet"]
    ]  # fmt: skip
    assert not [p for p in (out / "_parts").iterdir() if p.is_dir()]


def _manifests(out: Path) -> int:
    return len(list((out / "_parts").glob("part-*.json")))


def test_sigkill_mid_run_then_resume_gives_the_files_of_an_uninterrupted_run(
    diabetes_model: Path, tmp_path: Path
):
    inp = tmp_path / "in"
    _csv_inputs(inp, 8)
    script = _script(tmp_path)
    args = ["--scoring-script", str(script), "--mini-batch-size", "2", "--output-action", "summaryOnly"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert run_driver(flags(diabetes_model, inp, clean, *args)).returncode == 0

    # Slow enough to be killed mid-mini-batch: some mini-batches committed, one half written.
    env = {**os.environ, "SLOW_SCRIPT_S": "0.4", "MLENDPOINTS_TERMINATION_LOG": os.devnull}
    proc = subprocess.Popen(
        [*DRIVER, *flags(diabetes_model, inp, killed, *args)], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _manifests(killed) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the next mini-batch has written one of its two files
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    committed = _manifests(killed)
    assert 2 <= committed < 4, f"killed mid-run: {committed} of 4 mini-batches committed"
    assert not (killed / "summary.json").exists()
    assert not _files(killed), "nothing is in place before the merge"

    resumed = run_driver(flags(diabetes_model, inp, killed, *args))

    assert resumed.returncode == 0, resumed.stderr
    assert _files(killed) == _files(clean), "the same files, byte for byte, no partial and no extra"
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in clean.iterdir())
    assert not [p for p in (killed / "_parts").iterdir() if p.is_dir()], "the killed attempt's folder is gone"
    parts = sorted((killed / "_parts").glob("part-*.json"))
    assert [json.loads(p.read_text())["attempts"] for p in parts] == [1, 1, 1, 1]


def test_a_script_file_with_a_name_of_the_job_fails_its_mini_batch(diabetes_model: Path, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    _csv_inputs(inp, 1)
    script = tmp_path / "clash.py"
    script.write_text(
        textwrap.dedent("""
        import os
        def run(mini_batch):
            open(os.path.join(os.environ["MLENDPOINTS_BATCH_OUTPUT_DIR"], "summary.json"), "w").write("{}")
            return mini_batch
        """)
    )

    status = run(settings(diabetes_model, inp, out, scoring_script=str(script), max_retries=0))

    assert status.items.failed == 1
    [error] = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert "wrote 'summary.json'" in error["error"] and "that name is the job's own" in error["error"]
    assert json.loads((out / "summary.json").read_text())["phase"] == "Succeeded"
