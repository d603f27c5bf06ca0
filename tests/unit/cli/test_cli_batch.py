"""`mlendpoints batch`: settings from flags and --set, the driver's command line, progress lines, errors.

The commands that need a cluster or a model run for real in tests/integration/test_cli_batch.py
and e2e/test_batch_cluster.py; here, what needs neither (argument handling and the error lines,
through the real `mlendpoints` executable).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlendpoints.api.batch import BatchDeploymentSpec, BatchJobSpec
from mlendpoints.cli.batch_cmds import (
    driver_failure,
    failure_message,
    job_overrides,
    parse_sets,
    progress_line,
    run_argv,
)
from mlendpoints.errors import UserError
from mlendpoints.render.batch import JobSettings, driver_args

CLI = str(Path(sys.executable).parent / "mlendpoints")


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLENDPOINTS_LOCAL_HOME": str(home)}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_set_pairs_nest_on_dots_and_read_yaml_scalars() -> None:
    assert parse_sets(
        ("errorThreshold=5", "retrySettings.maxRetries=2", "retrySettings.timeout=90", "loggingLevel=debug")
    ) == {"errorThreshold": 5, "retrySettings": {"maxRetries": 2, "timeout": 90}, "loggingLevel": "debug"}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (("miniBatchSize",), "--set 'miniBatchSize': expected KEY=VALUE"),
        (("=3",), "--set '=3': expected KEY=VALUE"),
        (("errorThreshold=1", "errorThreshold.x=2"), "--set errorThreshold.x: errorThreshold is set"),
    ],
)
def test_malformed_set_pairs_are_refused(pairs: tuple[str, ...], message: str) -> None:
    with pytest.raises(UserError) as info:
        parse_sets(pairs)
    assert info.value.message.startswith(message)


def test_overrides_take_the_flags_then_set() -> None:
    overrides = job_overrides(4, 2, "summaryOnly", ("errorThreshold=10", "miniBatchSize=6"))
    assert overrides.miniBatchSize == 6  # --set names the field: it wins over the flag
    assert overrides.maxConcurrencyPerInstance == 2
    assert overrides.outputAction == "summaryOnly"
    assert overrides.errorThreshold == 10
    assert overrides.retrySettings is None and overrides.instanceCount is None


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("miniBatchSize=0", "--set miniBatchSize: Input should be greater than or equal to 1"),
        ("retrySettings.maxRetrie=2", "--set retrySettings.maxRetrie: no such setting"),
        ("outputAction=append", "--set outputAction: Input should be 'appendRow' or 'summaryOnly'"),
    ],
)
def test_invalid_overrides_name_the_setting(pair: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        job_overrides(None, None, None, (pair,))
    assert info.value.message == message
    assert info.value.hint and "errorThreshold" in info.value.hint


def test_run_gives_the_driver_the_flags_the_cluster_pods_get(tmp_path: Path) -> None:
    """`batch run` and the operator's Jobs turn the same settings into the same driver flags."""
    overrides = job_overrides(3, None, None, ("retrySettings.timeout=90",))
    job = BatchJobSpec.model_validate(
        {"endpointName": "e", "input": {"uri": "in"}, "output": {"uri": "out"}, "overrides": overrides}
    )
    dep = BatchDeploymentSpec(endpointName="e", model="m")
    settings = JobSettings.of(job, dep)
    argv = run_argv(tmp_path / "model", "in", "uriFolder", "out", settings, None)
    pod_args = driver_args(job, dep, settings, "score")
    assert argv[0].endswith("mlendpoints-batch")
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert flags == {
        **dict(zip(pod_args[::2], pod_args[1::2], strict=True)),
        "--model-dir": str(tmp_path / "model"),
        "--phase": "all",
    }
    # The API's defaults, where neither the job nor the flags set a value.
    assert flags["--mini-batch-size"] == "3" and flags["--retry-timeout"] == "90"
    assert flags["--max-retries"] == "3" and flags["--error-threshold"] == "-1"
    assert flags["--instance-count"] == "1"


def test_progress_line_shows_phase_counts_and_why() -> None:
    assert progress_line({}) == "Pending"
    assert (
        progress_line({"phase": "Pending", "message": "BatchEndpoint 'x' does not exist"})
        == "Pending: BatchEndpoint 'x' does not exist"
    )
    running = {
        "phase": "Running",
        "miniBatches": {"total": 5, "succeeded": 2, "failed": 1},
        "items": {"total": 10, "succeeded": 5, "failed": 1},
    }
    assert progress_line(running) == "Running, mini-batches 3/5, items 5 succeeded, 1 failed of 10"


def test_failure_message_prefers_the_complete_condition() -> None:
    status = {
        "phase": "Failed",
        "message": "stale",
        "conditions": [
            {"type": "Started", "status": "True", "message": "2 scoring Job(s)"},
            {"type": "Complete", "status": "False", "message": "ErrorThresholdExceeded: 3 items failed"},
        ],
    }
    assert failure_message(status) == "ErrorThresholdExceeded: 3 items failed"
    assert failure_message({"phase": "Failed", "message": "a scoring Job failed"}) == "a scoring Job failed"


def test_driver_failures_become_one_line_and_a_hint() -> None:
    error = driver_failure(
        "mlendpoints-batch failed: ErrorThresholdExceeded: 2 items failed\n", "s3://b/o/", 1
    )
    assert error.message == "the batch job failed: ErrorThresholdExceeded: 2 items failed"
    assert error.hint == "every failed item and why: s3://b/o/errors.jsonl"
    error = driver_failure("mlendpoints-batch failed: OutputExists: out holds another job", "out", 1)
    assert error.hint and "new --output" in error.hint
    error = driver_failure("", "out", -9)
    assert error.message == "mlendpoints-batch exited with code -9"
    # A reason of a newer driver: its words, no hint.
    error = driver_failure("mlendpoints-batch failed: OutOfQuota: the bucket is full", "out", 1)
    assert (error.message, error.hint) == ("the batch job failed: OutOfQuota: the bucket is full", None)


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (
            ("--model", "nowhere/model", "--input", "in", "--output", "out"),
            [
                "error: no model directory nowhere/model",
                "hint: pass an MLflow model directory or a URI (models:/NAME/VERSION, runs:/..., s3://...)",
            ],
        ),
        (
            ("-m", "m", "-i", "in", "-o", "out", "--set", "instanceCount=2"),
            [
                "error: batch run scores with one instance",
                "hint: use --max-concurrency for parallel workers here; instances are pods, in the cluster",
            ],
        ),
        (
            ("-m", "m", "-i", "pvc://data/in", "-o", "out"),
            [
                "error: --input pvc://data/in: a PVC exists only in the cluster",
                "hint: pass a local path or a URI",
            ],
        ),
    ],
)
def test_run_refuses_bad_arguments_with_one_line_and_a_hint(
    args: tuple[str, ...], lines: list[str], tmp_path: Path
) -> None:
    done = cli("batch", "run", *args, home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == lines


def test_invoke_checks_its_settings_before_the_cluster(tmp_path: Path) -> None:
    done = cli(
        "batch", "invoke", "iris", "-i", "pvc://d/in", "-o", "pvc://d/out", "--set", "errorThreshold=-2",
        "--kubeconfig", str(tmp_path / "missing"), home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("error: --set errorThreshold: Input should be greater than or equal to -1")


def test_invoke_names_an_unreachable_cluster(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: models}}]\n"
    )
    done = cli(
        "batch", "invoke", "iris", "-i", "a", "-o", "b", "--kubeconfig", str(kubeconfig), home=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot connect to http://127.0.0.1:9"), done.stderr
    assert "Traceback" not in done.stderr


def test_stream_follows_the_jobs_mini_batches_with_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from mlendpoints.cli import batch_cmds

    statuses = iter(
        [
            {"phase": "Pending"},
            {"phase": "Running", "miniBatches": {"total": 4, "succeeded": 1}, "items": {"total": 40}},
            {"phase": "Running", "miniBatches": {"total": 4, "succeeded": 3}, "message": "merging"},
            {"phase": "Succeeded", "miniBatches": {"total": 4, "succeeded": 4}, "items": {"total": 40}},
        ]
    )
    seen: list[str] = []

    class Cluster:
        def get(self, kind: object, name: str) -> dict[str, object]:
            status = next(statuses)
            seen.append(str(status["phase"]))
            return {"status": status}

    out = io.StringIO()
    monkeypatch.setattr(batch_cmds, "console", Console(file=out, width=150, force_terminal=False))
    final = batch_cmds.follow_bar(Cluster(), "nightly", poll_s=0)  # type: ignore[arg-type]

    assert final["phase"] == "Succeeded" and seen == ["Pending", "Running", "Running", "Succeeded"]
    text = out.getvalue()
    assert "merging" in text
    assert "batchjob nightly Succeeded" in text and "4/4 mini-batches, items 0 ok, 0 failed of 40" in text
