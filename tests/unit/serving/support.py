"""Helpers for the serving tests: run `mlendpoints-serve` (or `mlflow models serve`) as real processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from tests.fixtures.servers import free_port, running

BIN = Path(sys.executable).parent


@dataclass
class Server:
    url: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@contextlib.contextmanager
def serve(
    model_dir: Path,
    log: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready: str = "/health",
    timeout: float = 90.0,
) -> Iterator[Server]:
    port = free_port()
    argv = [
        str(BIN / "mlendpoints-serve"),
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        *args,
    ]
    if "--workers" not in args:
        argv += ["--workers", "1"]
    with running(
        argv, ready_url=f"http://127.0.0.1:{port}{ready}", timeout=timeout, log=log, env=env
    ) as proc:
        yield Server(f"http://127.0.0.1:{port}", log, proc)


@contextlib.contextmanager
def mlflow_serve(model_dir: Path, log: Path) -> Iterator[Server]:
    """The real `mlflow models serve` of this environment, the reference for /invocations."""
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(BIN)) or "mlflow"
    argv = [
        mlflow,
        "models",
        "serve",
        "-m",
        str(model_dir),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "--env-manager",
        "local",
        "-w",
        "1",
    ]
    # It starts `uvicorn` through bash: this environment's bin must be on PATH.
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with running(argv, ready_url=f"http://127.0.0.1:{port}/ping", timeout=120, log=log, env=env):
        yield Server(f"http://127.0.0.1:{port}", log)


def save_behaving_model(dest: Path) -> Path:
    """A pyfunc that fails (param `fail`, or a negative x) or sleeps (`sleep_s`): for 500/408 tests."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    if (dest / "MLmodel").exists():
        return dest

    class Behaving(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            import time

            params = params or {}
            if params.get("fail") or (model_input["x"] < 0).any():
                raise ValueError("the model refuses this input")
            time.sleep(float(params.get("sleep_s", 0.0)))
            return (model_input["x"] - model_input["y"]).to_numpy()

    example = pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 0.5]})
    signature = infer_signature(example, np.array([0.5, 1.5]), params={"fail": False, "sleep_s": 0.0})
    mlflow.pyfunc.save_model(str(dest), python_model=Behaving(), signature=signature, input_example=example)
    return dest


SCORING_SCRIPT = """
import json
import os

state = {}


def init():
    state["model_dir"] = os.environ["AZUREML_MODEL_DIR"]
    state["same"] = os.environ["MLENDPOINTS_MODEL_DIR"] == state["model_dir"]
    state["inits"] = state.get("inits", 0) + 1


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("explode"):
        raise RuntimeError("script exploded on purpose: secret-in-message")
    if data.get("opaque"):
        return object()
    return {"sum": sum(data["values"]), "inits": state["inits"], "model_dir": state["model_dir"],
            "same_dir": state["same"]}
"""
