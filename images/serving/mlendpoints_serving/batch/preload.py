"""Imported once by the workers' fork server (a multiprocessing preload): loads the model there.

Every worker forks from that server, so it starts with the model in memory (pages
shared until written) instead of paying MLflow's one-time load costs (flavor
imports, dependency checks: seconds) once per worker. Only for flavors whose
loading starts no threads and touches no device, which a fork would break (the
coordinator decides: `coordinator.fork_safe`); other models, and scoring scripts
(whose init() runs per worker), load in each worker as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mlendpoints_serving.batch.forkserver import ENV_PRELOAD_MODEL_DIR
from mlendpoints_serving.model import ServedModel, load


def _preload() -> ServedModel | None:
    model_dir = os.environ.get(ENV_PRELOAD_MODEL_DIR)
    if not model_dir:
        return None
    try:
        return load(model_dir)
    except Exception:  # each worker loads it again and reports the error as its own
        logging.getLogger("mlendpoints.batch").debug("preloading the model failed", exc_info=True)
        return None


MODEL = _preload()


def model_for(model_dir: str) -> ServedModel:
    """The preloaded model if it is this one (a long-lived fork server may hold another), else a load."""
    if MODEL is not None and MODEL.model_dir == Path(model_dir):
        return MODEL
    return load(model_dir)
