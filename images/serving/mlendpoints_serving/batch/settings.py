"""The batch driver's settings: command-line flags (or MLENDPOINTS_BATCH_* env vars), read once at start."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlendpoints_serving.contract import (
    BATCH_DEFAULT_OUTPUT_FILE,
    BATCH_PROGRESS_INTERVAL_S,
    ENV_PREFIX_BATCH,
    BatchOutputFormat,
    batch_rows_name,
)


class BatchSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX_BATCH,
        cli_kebab_case=True,
        cli_prog_name="mlendpoints-batch",
        cli_implicit_flags=True,
    )

    model_dir: str = Field(description="MLflow model directory (fetched by the init container).")
    input: str = Field(description="Input URI: local path, s3://, gs://, abfss:// or https:// (input only).")
    input_type: Literal["uriFolder", "uriFile"] = Field(
        default="uriFolder",
        description="uriFolder: every file under it (nested folders walked); uriFile: one.",
    )
    output: str = Field(description="Output folder URI (local path, s3://, gs://, abfss://).")
    mini_batch_size: int = Field(default=10, ge=1, description="Files per mini-batch.")
    max_concurrency: int = Field(default=1, ge=1, description="Worker processes of this instance.")
    output_action: Literal["appendRow", "summaryOnly"] = "appendRow"
    output_file_name: str = Field(default=BATCH_DEFAULT_OUTPUT_FILE, pattern=r"^[^/\\]+$")
    output_format: BatchOutputFormat = Field(
        default="csv", description="Rows file format: csv (Azure's predictions.csv), parquet or jsonl."
    )
    output_header: bool = Field(
        default=True,
        description="csv: a header line naming the columns first; off (--no-output-header): rows only, "
        "Azure's predictions.csv layout, read there with pd.read_csv(path, names=[...]).",
    )
    partition_outputs: bool = Field(
        default=False,
        description="One rows file per input file (its relative path, the format's extension) "
        "in a folder named after the output file, instead of one rows file.",
    )
    max_retries: int = Field(default=3, ge=0, description="Retries of a mini-batch that raises or times out.")
    retry_timeout: float = Field(default=30.0, gt=0, description="Seconds one mini-batch may take.")
    error_threshold: int = Field(
        default=-1, ge=-1, description="Fail (ErrorThresholdExceeded) when more items failed; -1: never."
    )
    logging_level: Literal["debug", "info", "warning", "error"] = "info"
    scoring_script: str | None = Field(
        default=None, description="Python file with init() and run(mini_batch) (Azure's batch contract)."
    )
    azureml_model_dir: str | None = Field(
        default=None,
        description="AZUREML_MODEL_DIR for a scoring script (default: the model dir); Azure's layout puts "
        "the model dir in it, as a folder named as the one the model was registered from.",
    )
    instance_index: int | None = Field(
        default=None, ge=0, description="This instance's index (default: $JOB_COMPLETION_INDEX, else 0)."
    )
    instance_count: int = Field(default=1, ge=1, description="Instances sharing the mini-batches.")
    phase: Literal["all", "score", "merge"] = Field(
        default="all",
        description="all: score, then merge (one instance); score: this instance's share; merge: the output.",
    )
    progress_configmap: str | None = Field(
        default=None,
        description="In a cluster: the ConfigMap this instance reports its progress to (the operator's).",
    )
    progress_interval: float = Field(
        default=BATCH_PROGRESS_INTERVAL_S, gt=0, description="Seconds between progress reports, at most."
    )
    chunk_mb: int = Field(
        default=64,
        ge=1,
        description="Files larger than this many MiB are read and scored in chunks this size.",
    )

    @model_validator(mode="after")
    def _check(self) -> BatchSettings:
        if self.instance_index is not None and self.instance_index >= self.instance_count:
            raise ValueError(
                f"instance-index {self.instance_index} must be below instance-count {self.instance_count}"
            )
        if self.phase == "all" and self.instance_count > 1:
            raise ValueError(
                "phase 'all' runs one instance; with instance-count > 1 run 'score' per instance, "
                "then 'merge' once"
            )
        return self

    @property
    def rows_name(self) -> str:
        """The rows file (or, partitioned, folder) relative to the output folder."""
        return batch_rows_name(self.output_file_name, self.output_format, self.partition_outputs)

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_mb * 2**20
