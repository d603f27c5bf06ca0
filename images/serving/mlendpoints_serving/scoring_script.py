"""Loading an Azure-style scoring script: the one loader the model server and the batch driver share.

Both contracts are Azure ML's: a Python file with `init()` (optional, called once per
process after loading) and `run(...)` (`run(raw_data)` online, `run(mini_batch)` in
batch). Before `init()` runs, `AZUREML_MODEL_DIR` and `MLENDPOINTS_MODEL_DIR` name
the model directory (and any `extra_env` is set, e.g. batch's output folder), and the
script's own folder is on `sys.path`, so it can import modules shipped next to it, as
Azure's inference server allows.

Azure ML puts a model registered from a folder under `AZUREML_MODEL_DIR/<folder>`, and
scripts say so (`os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model", "model.pkl")`).
The operator then fetches the model into `<mount>/<folder>` and passes `<mount>` as
`azureml_model_dir`; `MLENDPOINTS_MODEL_DIR` stays the model directory itself. (A link
to the model directory would not do: MLflow refuses to load a model through one.)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from mlendpoints_serving.contract import ENV_AZUREML_MODEL_DIR, ENV_MODEL_DIR


def load_scoring_script(
    path: os.PathLike[str] | str,
    model_dir: os.PathLike[str] | str,
    run_signature: str,
    extra_env: Mapping[str, str] | None = None,
    azureml_model_dir: os.PathLike[str] | str | None = None,
) -> ModuleType:
    """Import the script and call its init() (blocking). `run_signature`, e.g. 'run(raw_data)', names
    the entry point in the error when the script has none; `azureml_model_dir`: AZUREML_MODEL_DIR, when
    it is not the model directory (Azure's layout: the model directory is a folder in it)."""
    os.environ[ENV_AZUREML_MODEL_DIR] = str(model_dir if azureml_model_dir is None else azureml_model_dir)
    os.environ[ENV_MODEL_DIR] = str(model_dir)
    os.environ.update(extra_env or {})
    resolved = Path(path).resolve()
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the script may import its neighbours
    # A name of its own (not e.g. "score"), so the script cannot shadow or be shadowed by a module
    # of that name that it, or a neighbour, imports.
    spec = importlib.util.spec_from_file_location(f"mlendpoints_scoring_{resolved.stem}", resolved)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import scoring script {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise ImportError(f"scoring script {path} has no {run_signature} function")
    init = getattr(module, "init", None)
    if callable(init):
        init()
    return module
