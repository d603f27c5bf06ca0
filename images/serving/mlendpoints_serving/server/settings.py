"""The model server's settings: flags (`--max-batch-size`) or `MLENDPOINTS_SERVE_*` env vars, read once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlendpoints_serving.contract import ENV_PREFIX_SERVE, SERVER_PORT


def container_cpus() -> int:
    """The container's CPU limit (cgroup v2 cpu.max, v1 quota), else the CPUs this process may use."""
    available = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, min(available, round(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_us > 0:
            return max(1, min(available, round(quota_us / period_us)))
    except (OSError, ValueError):
        pass
    return max(1, available)


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX_SERVE,
        cli_kebab_case=True,
        cli_prog_name="mlendpoints-serve",
        cli_implicit_flags=True,
        protected_namespaces=(),
    )

    model_dir: Path = Field(description="MLflow model directory (or the directory a scoring script reads)")
    fetch_model_uri: str | None = Field(
        default=None,
        description="fetch this model URI into model_dir first, in this process, as mlendpoints-fetch "
        "would (one container and one Python start less: pods that start on demand start sooner)",
    )
    host: str = "0.0.0.0"
    port: int = SERVER_PORT
    workers: int = Field(
        default_factory=container_cpus,
        ge=1,
        description="worker processes, each loading the model (default: container CPU limit)",
    )
    batching: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="continuous batching of concurrent requests: auto is on for row-independent models "
        "(scikit-learn, xgboost, lightgbm, a pyfunc with a tensor or column signature), off for others; "
        "a scoring script is never batched",
    )
    max_batch_size: int = Field(
        default=32, ge=1, description="most rows per batched predict(); larger requests run alone; 1: off"
    )
    max_batch_time_ms: float = Field(
        default=0.0,
        ge=0,
        description="fixed wait for a batch to fill; 0: none (a batch goes when the model is free)",
    )
    request_timeout_ms: int = Field(default=60_000, ge=1, description="past this a request gets 408")
    stuck_after_s: float | None = Field(
        default=None,
        ge=0,
        description="a prediction still running after this is stuck: the worker exits so that the pod "
        "restarts (default: twice the request timeout, at least 30 s; 0: never)",
    )
    max_body_bytes: int = Field(default=100 * 1024 * 1024, ge=1, description="larger bodies get 413")
    scoring_script: Path | None = Field(default=None, description="Azure-style script with init() and run()")
    azureml_model_dir: Path | None = Field(
        default=None,
        description="AZUREML_MODEL_DIR for a scoring script (default: the model dir); Azure's layout puts "
        "the model dir in it, as a folder named as the one the model was registered from",
    )
    env_manager: Literal["local", "virtualenv"] = "local"
    env_cache_dir: Path = Field(
        default=Path("/tmp/mlendpoints/envs"),
        description="where --env-manager virtualenv keeps venvs, keyed by hash",
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="PyTorch models: auto (a GPU when CUDA is visible, worker i on GPU i mod count, else "
        "the CPU), cpu, cuda (fails when none is visible) or cuda:N",
    )
    model_name: str = Field(default="model", description="name in the Open Inference Protocol routes")
    metrics_dir: Path = Field(
        default=Path("/tmp"), description="parent of the Prometheus multiprocess directory (workers > 1)"
    )
    log_level: str = "info"

    @property
    def stuck_prediction_s(self) -> float:
        """Seconds after which a running prediction counts as stuck; 0 when never."""
        if self.stuck_after_s is not None:
            return self.stuck_after_s
        return max(2 * self.request_timeout_ms / 1000, 30.0)
