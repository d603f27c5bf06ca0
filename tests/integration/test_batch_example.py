"""examples/iris-batch runs as its README says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.batch_support import run_driver

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris-batch"


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """The example's first README step: its model and input files under tmp_path."""
    argv = [sys.executable, str(EXAMPLE / "prepare.py"), str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return tmp_path


def test_iris_batch_example(tmp_path: Path, prepared: Path):
    base = [
        "--model-dir",
        str(tmp_path / "model"),
        "--input",
        str(tmp_path / "input"),
        "--mini-batch-size",
        "2",
    ]

    scored = run_driver([*base, "--output", str(tmp_path / "out"), "--max-concurrency", "2"])
    assert scored.returncode == 0, scored.stderr
    got = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(got.columns) == ["row", "prediction", "file_name"] and len(got) == 150
    assert list(dict.fromkeys(got["file_name"])) == [
        "2024/batch-d.csv",
        "2024/june/batch-c.jsonl",
        "batch-a.csv",
        "batch-b.parquet",
    ]
    assert set(got["prediction"]) == {0, 1, 2}
    [error] = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["file_name"] == "README.txt"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (
        summary["items"] == {"total": 5, "succeeded": 4, "failed": 1} and summary["miniBatches"]["total"] == 3
    )

    before = (tmp_path / "out" / "summary.json").read_bytes()
    assert run_driver([*base, "--output", str(tmp_path / "out")]).returncode == 0, "the same job: a no-op"
    assert (tmp_path / "out" / "summary.json").read_bytes() == before
    other = run_driver([*base[:4], "--output", str(tmp_path / "out"), "--mini-batch-size", "3"])
    assert other.returncode == 1 and "OutputExists" in other.stderr, "another job: refused"

    two = [*base, "--output", str(tmp_path / "out2"), "--instance-count", "2"]
    for i in (0, 1):
        assert run_driver([*two, "--phase", "score", "--instance-index", str(i)]).returncode == 0
    assert run_driver([*two, "--phase", "merge"]).returncode == 0
    assert (tmp_path / "out2" / "predictions.csv").read_bytes() == (
        tmp_path / "out" / "predictions.csv"
    ).read_bytes()

    script = run_driver(
        [*base[:4], "--output", str(tmp_path / "out-script"), "--scoring-script", str(EXAMPLE / "score.py")]
    )
    assert script.returncode == 0, script.stderr
    rows = pd.read_csv(tmp_path / "out-script" / "predictions.csv")
    assert list(rows.columns) == ["file_name", "row", "label", "confidence"] and len(rows) == 60
    failed = [
        json.loads(x)["file_name"]
        for x in (tmp_path / "out-script" / "errors.jsonl").read_text().splitlines()
    ]
    assert sorted(failed) == ["2024/june/batch-c.jsonl", "README.txt", "batch-b.parquet"]


def test_custom_outputs_example_writes_a_parquet_file_per_input(tmp_path: Path, prepared: Path):
    out = tmp_path / "out"
    done = run_driver(
        [
            "--model-dir", str(tmp_path / "model"), "--input", str(tmp_path / "input"), "--output", str(out),
            "--mini-batch-size", "2", "--output-action", "summaryOnly",
            "--scoring-script", str(EXAMPLE / "custom_outputs.py"),
        ]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "batch-a.parquet",
        "batch-b.parquet",
        "batch-d.parquet",
    ]
    rows = pd.concat(pd.read_parquet(p) for p in out.glob("*.parquet"))
    assert len(rows) == 110 and set(rows["prediction"]) <= {0, 1, 2}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == {"total": 5, "succeeded": 3, "failed": 2}
    assert not (out / "predictions.csv").exists()


def test_the_custom_outputs_yaml_is_valid_for_the_api():
    import yaml

    from mlendpoints.api.batch import BatchDeploymentSpec, BatchJobSpec

    deployment, job = yaml.safe_load_all((EXAMPLE / "custom-outputs.yaml").read_text())
    spec = BatchDeploymentSpec.model_validate(deployment["spec"])
    assert spec.codeConfiguration is not None and spec.codeConfiguration.scoringScript == "custom_outputs.py"
    assert spec.settings.outputAction == "summaryOnly"
    assert BatchJobSpec.model_validate(job["spec"]).deploymentName == deployment["metadata"]["name"]
