"""Where batch workers come from: a multiprocessing fork server that imported the heavy modules once.

Side-effect free on import, so both sides may import it: the coordinator (which
starts the fork server and decides whether the model is preloaded there) and
`batch.preload` (which the fork server imports, and which loads the model). Keeping
these names here, not in the coordinator, is what keeps the batch package's import
graph free of cycles (coordinator -> worker -> scoring -> preload -> forkserver).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.context import ForkServerContext
from pathlib import Path

import yaml

# Read by the fork server's preload (batch/preload.py): the model to load once for every worker.
ENV_PRELOAD_MODEL_DIR = "MLENDPOINTS_PRELOAD_MODEL_DIR"
FORK_SAFE_FLAVORS = {"sklearn", "statsmodels"}  # loading them starts no thread and touches no device
WORKER_PRELOAD = ["mlendpoints_serving.batch.worker", "mlflow.pyfunc", "mlendpoints_serving.batch.preload"]


def fork_safe(model_dir: str) -> bool:
    """Whether the model may be loaded once in the fork server and shared by the forked workers."""
    try:
        flavors = yaml.safe_load((Path(model_dir) / "MLmodel").read_text()).get("flavors", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return False
    return bool(FORK_SAFE_FLAVORS & set(flavors))


def worker_context(model_dir: str, scoring_script: str | None) -> ForkServerContext:
    """The context workers are started from: a fork server (not the coordinator, whose fsspec loop
    thread must not be forked) that preloads the worker's modules, and the model when that is safe."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    if not scoring_script and fork_safe(model_dir):
        os.environ[ENV_PRELOAD_MODEL_DIR] = model_dir  # read by the fork server it starts
    return ctx
