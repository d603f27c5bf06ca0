"""The driver's flags: parsed once, invalid combinations named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import CliApp

from mlendpoints_serving.batch.settings import BatchSettings

BASE = ["--model-dir", "m", "--input", "s3://b/in", "--output", "/out"]


def test_flags_parse_with_defaults():
    s = CliApp.run(
        BatchSettings,
        cli_args=[
            *BASE,
            "--input-type",
            "uriFile",
            "--error-threshold",
            "-1",
            "--max-concurrency",
            "2",
            "--output-action",
            "summaryOnly",
        ],
    )
    assert (s.input_type, s.max_concurrency, s.output_action) == ("uriFile", 2, "summaryOnly")
    assert (s.mini_batch_size, s.max_retries, s.retry_timeout, s.output_file_name) == (
        10,
        3,
        30.0,
        "predictions.csv",
    )
    assert s.instance_index is None and s.phase == "all"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--mini-batch-size", "0"], "mini_batch_size"),
        (["--error-threshold", "-2"], "error_threshold"),
        (["--output-action", "append_row"], "output_action"),
        (["--output-file-name", "a/b.csv"], "output_file_name"),
        (["--instance-count", "2", "--phase", "score", "--instance-index", "2"], "below instance-count"),
        (["--instance-count", "2"], "phase 'all' runs one instance"),
    ],
)
def test_invalid_flags_are_named(extra: list[str], problem: str):
    with pytest.raises(ValidationError, match=problem):
        CliApp.run(BatchSettings, cli_args=[*BASE, *extra])
