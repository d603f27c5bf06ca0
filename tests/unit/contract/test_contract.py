"""The contract between the planes: the batch driver's failure line, label values, env names.

Each test checks a producer and a consumer against the same declaration in
`mlendpoints_serving.contract`, so that neither side can drift on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlendpoints_serving import contract
from mlendpoints_serving.batch import cli as batch_cli
from mlendpoints_serving.contract import BatchFailure, format_failure, parse_failure


@pytest.mark.parametrize("reason", list(BatchFailure))
def test_every_failure_line_parses_back_to_its_reason_and_message(reason: BatchFailure) -> None:
    line = format_failure(reason, "s3://bucket/out holds parts: of another job")
    assert line == f"mlendpoints-batch failed: {reason.value}: s3://bucket/out holds parts: of another job"
    parsed = parse_failure(line + "\n")
    assert parsed is not None
    assert parsed.reason is reason
    assert parsed.message == "s3://bucket/out holds parts: of another job"
    assert parsed.detail == line.removeprefix("mlendpoints-batch failed: ")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mlendpoints-serve failed: model load failed: No module named 'xgboost'",
        "mlendpoints-batch failed: SomethingNew: a reason this version does not know",
        "Traceback (most recent call last):",
        '{"phase": "Succeeded"}',
    ],
)
def test_other_text_is_no_batch_failure(text: str) -> None:
    assert parse_failure(text) is None


def test_a_retry_cannot_fix_a_final_failure() -> None:
    # What the operator stops a job for at once; PartsMissing waits for the other instances' parts.
    assert {r for r in BatchFailure if r.final} == {
        BatchFailure.ErrorThresholdExceeded,
        BatchFailure.OutputExists,
        BatchFailure.InvalidSettings,
        BatchFailure.InputNotFound,
        BatchFailure.WorkerInitFailed,
        BatchFailure.OutputColumnsDiffer,
        BatchFailure.NothingToMerge,
    }


def test_the_driver_writes_a_line_the_control_plane_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    termination_log = tmp_path / "termination-log"
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(termination_log))
    with pytest.raises(SystemExit) as exited:
        batch_cli.main(["--model-dir", str(tmp_path), "--input", str(tmp_path), "--output", str(tmp_path),
                        "--mini-batch-size", "0"])  # fmt: skip
    assert exited.value.code == 2
    parsed = parse_failure(termination_log.read_text())
    assert parsed is not None and parsed.reason is BatchFailure.InvalidSettings
    assert "mini_batch_size" in parsed.message


def test_missing_input_is_reported_as_input_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    termination_log = tmp_path / "termination-log"
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(termination_log))
    with pytest.raises(SystemExit) as exited:
        batch_cli.main(["--model-dir", str(tmp_path), "--input", str(tmp_path / "nothing-here"),
                        "--output", str(tmp_path / "out")])  # fmt: skip
    assert exited.value.code == 1
    parsed = parse_failure(termination_log.read_text())
    assert parsed is not None and parsed.reason is BatchFailure.InputNotFound


def test_the_host_env_names_the_control_plane_sets_are_the_servers_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlendpoints_serving.router.cli import RouterSettings
    from mlendpoints_serving.server.settings import ServeSettings

    monkeypatch.setenv(contract.ENV_SERVE_HOST, "127.0.0.7")
    monkeypatch.setenv(contract.ENV_ROUTER_HOST, "127.0.0.8")
    assert ServeSettings(model_dir=Path("/m"), workers=1).host == "127.0.0.7"  # type: ignore[call-arg]
    assert RouterSettings(config=Path("/router.json")).host == "127.0.0.8"


def test_component_label_values_are_distinct() -> None:
    values = [contract.COMPONENT_ROUTER, contract.COMPONENT_SERVER, contract.COMPONENT_BATCH]
    assert len(set(values)) == len(values)
    assert all(os.path.basename(v) == v and v.islower() for v in values)
