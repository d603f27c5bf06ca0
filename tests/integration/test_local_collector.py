"""`mlendpoints local up` honours dataCollector with a local path; `mlendpoints compare` reads it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from examples.models import save_diabetes_regressor
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "mlendpoints")
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]

YAML = """\
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineEndpoint
metadata: {{name: collected}}
spec: {{authMode: none, traffic: {{blue: 100}}, mirrorTraffic: {{{mirror}: 50}}}}
---
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineDeployment
metadata: {{name: blue}}
spec:
  endpointName: collected
  model: {v1}
  workers: 1
  dataCollector: {{destination: {records}, collections: {{request: {{enabled: true}}}}}}
---
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineDeployment
metadata: {{name: same}}
spec: {{endpointName: collected, model: {v1}, workers: 1, dataCollector: {{destination: {records}}}}}
---
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineDeployment
metadata: {{name: other}}
spec: {{endpointName: collected, model: {v2}, workers: 1, dataCollector: {{destination: {records}}}}}
"""


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLENDPOINTS_LOCAL_HOME": str(home), "COLUMNS": "250"}
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def score(port: int, n: int) -> None:
    for i in range(n):
        row = [((i * 5 + j) % 9 - 4) / 100 for j in range(len(COLUMNS))]
        body = json.dumps({"input_data": {"columns": COLUMNS, "data": [row]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/score", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def test_local_up_collects_to_a_folder_and_compare_reports_agreement(
    tmp_path: Path, diabetes_model: Path
) -> None:
    home, records, port = tmp_path / "home", tmp_path / "records", free_port()
    v2 = save_diabetes_regressor(tmp_path / "diabetes-v2", alpha=0.1)
    folder = tmp_path / "yaml"
    folder.mkdir()

    def up(mirror: str) -> None:
        text = YAML.format(mirror=mirror, v1=diabetes_model, v2=v2, records=records)
        (folder / "endpoint.yaml").write_text(text)
        cli(home, "local", "up", "-f", str(folder), "--port", str(port), "--detach")

    try:
        up("same")
        score(port, 40)
        up("other")  # same router process, new mirror
        score(port, 40)
    finally:
        cli(home, "local", "down", "collected")  # SIGTERM: the router flushes what is queued

    files = sorted(records.rglob("*.jsonl"))
    assert files and all(f.relative_to(records).parts[0] == "collected" for f in files)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sum(r["role"] == "live" for r in lines) == 80

    report = json.loads(cli(home, "compare", "collected", "--destination", str(records), "--json").stdout)
    pairs = {(r["live"], r["mirror"]): r for r in report}
    assert pairs[("blue", "same")]["compared"] > 0 and pairs[("blue", "same")]["agreement"] == 1.0
    assert pairs[("blue", "other")]["compared"] > 0 and pairs[("blue", "other")]["agreement"] < 1.0
    assert pairs[("blue", "other")]["mean_abs_diff"] > 0

    table = cli(home, "compare", "collected", "--destination", str(records), "--since", "1h").stdout
    assert "100.0%" in table and "blue" in table and "other" in table
