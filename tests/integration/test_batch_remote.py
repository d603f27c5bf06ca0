"""The batch driver against remote storage: S3 through a real S3-compatible server (moto), https input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import s3fs

from tests.fixtures.servers import free_port, running
from tests.integration.batch_support import flags, moto_s3, run_driver, write_csvs, write_pngs


@pytest.fixture
def s3_env(tmp_path: Path):
    with moto_s3(tmp_path / "moto.log") as env:
        yield env


def _fs(env: dict[str, str]) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
    )


def test_s3_input_and_output_match_a_local_run(diabetes_model: Path, tmp_path: Path, s3_env: dict[str, str]):
    inp = tmp_path / "in"
    write_csvs(inp / "nested", 5, 40)
    write_pngs(inp, 1)  # the diabetes model cannot take an image: an item error
    fs = _fs(s3_env)
    fs.mkdir("bkt")
    fs.put(str(inp) + "/", "bkt/in/", recursive=True)

    local = run_driver(flags(diabetes_model, inp, tmp_path / "out", "--mini-batch-size", "2"))
    assert local.returncode == 0, local.stderr
    remote = run_driver(
        flags(
            diabetes_model, "s3://bkt/in", "s3://bkt/out", "--mini-batch-size", "2", "--max-concurrency", "2"
        ),
        env=s3_env,
    )
    assert remote.returncode == 0, remote.stderr

    assert fs.cat("bkt/out/predictions.csv") == (tmp_path / "out" / "predictions.csv").read_bytes()
    assert fs.cat("bkt/out/errors.jsonl") == (tmp_path / "out" / "errors.jsonl").read_bytes()
    [error] = [json.loads(line) for line in fs.cat("bkt/out/errors.jsonl").splitlines()]
    assert error["file_name"] == "img-0.png" and "cannot be scored" in error["error"]
    summary = json.loads(fs.cat("bkt/out/summary.json"))
    assert summary["items"] == {"total": 6, "succeeded": 5, "failed": 1}
    assert summary["output"] == "s3://bkt/out/predictions.csv"
    assert not fs.glob("bkt/out/_parts/part-*.csv"), "row parts are removed once merged"
    assert not fs.glob("bkt/out/**/.tmp-*"), "object stores need no temporary names"

    again = run_driver(flags(diabetes_model, "s3://bkt/in", "s3://bkt/out"), env=s3_env)
    assert again.returncode == 1 and "OutputExists" in again.stderr, (
        "different settings, same output: refused"
    )


def test_a_single_file_over_https(diabetes_model: Path, tmp_path: Path):
    inp = tmp_path / "site"
    [path] = write_csvs(inp, 1, 25)
    port = free_port()
    server = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(inp)]
    # Plain http on loopback: fsspec's http filesystem serves both http:// and https://.
    with running(server, ready_url=f"http://127.0.0.1:{port}/"):
        proc = run_driver(
            flags(
                diabetes_model,
                f"http://127.0.0.1:{port}/{path.name}",
                tmp_path / "out",
                "--input-type",
                "uriFile",
            )
        )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert len(lines) == 26 and lines[1].endswith(f',"{path.name}"')


SCRIPT_WRITING_FILES = """
import os
import pandas as pd
from pathlib import Path

def init():
    global out
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]

def run(mini_batch):
    for path in mini_batch:
        (Path(out) / "copies").mkdir(exist_ok=True)
        pd.read_csv(path).to_parquet(Path(out) / "copies" / (Path(path).stem + ".parquet"))
    return mini_batch
"""


def test_s3_custom_and_partitioned_outputs_match_a_local_run(
    diabetes_model: Path, tmp_path: Path, s3_env: dict[str, str]
):
    """Staged files are moved into place on an object store (copy, then delete) as locally (rename)."""
    inp = tmp_path / "in"
    write_csvs(inp / "nested", 3, 10)
    fs = _fs(s3_env)
    fs.mkdir("bkt")
    fs.put(str(inp) + "/", "bkt/in/", recursive=True)
    script = tmp_path / "copies.py"
    script.write_text(SCRIPT_WRITING_FILES)
    partitioned = ["--mini-batch-size", "2", "--output-format", "parquet", "--partition-outputs"]
    custom = ["--mini-batch-size", "2", "--output-action", "summaryOnly", "--scoring-script", str(script)]
    for name, extra in (("parts", partitioned), ("custom", custom)):
        local = run_driver(flags(diabetes_model, inp, tmp_path / name, *extra))
        assert local.returncode == 0, local.stderr
        remote = run_driver(flags(diabetes_model, "s3://bkt/in", f"s3://bkt/{name}", *extra), env=s3_env)
        assert remote.returncode == 0, remote.stderr
        files = sorted(
            p.relative_to(tmp_path / name).as_posix() for p in (tmp_path / name).rglob("*.parquet")
        )
        assert files, name
        for rel in files:
            assert fs.cat(f"bkt/{name}/{rel}") == (tmp_path / name / rel).read_bytes(), rel
        assert not [p for p in fs.find(f"bkt/{name}/_parts") if "/out-" in p], "attempt folders removed"
    assert files == [f"copies/part-{i:03d}.parquet" for i in range(3)]
