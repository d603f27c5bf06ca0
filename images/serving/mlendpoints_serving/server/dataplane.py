"""The data plane of one worker: loads the model (or scoring script) and runs inference off the event loop.

Transports call `infer()` / `run_script()` with already-decoded input; all blocking
work (loading, predict, the script's init/run) runs in one inference thread so the
event loop keeps serving health checks, metrics and request parsing.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlendpoints_serving.contract import ENV_AZUREML_MODEL_DIR, ENV_MODEL_DIR
from mlendpoints_serving.server.settings import ServeSettings

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

    from mlendpoints_serving.model import ModelInput, ServedModel
    from mlendpoints_serving.server.batching import AdaptiveBatcher
    from mlendpoints_serving.server.metrics import Metrics

log = logging.getLogger("mlendpoints.serve")


def load_scoring_script(path: os.PathLike[str] | str, model_dir: os.PathLike[str] | str) -> ModuleType:
    """Import an Azure-style scoring script and call its init() (blocking)."""
    os.environ[ENV_AZUREML_MODEL_DIR] = str(model_dir)
    os.environ[ENV_MODEL_DIR] = str(model_dir)
    spec = importlib.util.spec_from_file_location("score", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import scoring script {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise ImportError(f"scoring script {path} has no run(raw_data) function")
    if callable(getattr(module, "init", None)):
        module.init()
    return module


class DataPlane:
    def __init__(
        self, settings: ServeSettings, metrics: Metrics, workers_loaded: Synchronized[int] | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # Shared by the worker processes: the pod is ready only once every worker has loaded, so
        # no request reaches a worker still loading (they all accept on the one socket).
        self._workers_loaded = workers_loaded
        self.model: ServedModel | None = None
        self.script: ModuleType | None = None
        self.load_error: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._batcher: AdaptiveBatcher | None = None

    @property
    def ready(self) -> bool:
        loaded = self.model is not None or self.script is not None
        if self._workers_loaded is None:
            return loaded
        return loaded and self._workers_loaded.value >= self.settings.workers

    async def load(self) -> None:
        """Load in the inference thread; the server answers liveness meanwhile."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            if self.settings.scoring_script:
                self.script = await loop.run_in_executor(
                    self._executor, load_scoring_script, self.settings.scoring_script, self.settings.model_dir
                )
            else:
                from mlendpoints_serving.model import load

                self.model = await loop.run_in_executor(
                    self._executor, load, self.settings.model_dir, self.settings.device
                )
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            raise
        self.metrics.model_load_seconds.set(time.perf_counter() - started)
        if self._workers_loaded is not None:
            with self._workers_loaded.get_lock():
                self._workers_loaded.value += 1
        # The hundreds of thousands of objects from importing MLflow/pandas and loading the model
        # live as long as the process: out of the collector's reach, a full collection no longer
        # stalls requests for tens of milliseconds (p99 60 ms -> 13 ms in bench/serving.py).
        gc.collect()
        gc.freeze()
        if self.model is not None and self.settings.max_batch_size > 1:
            from mlendpoints_serving.server.batching import AdaptiveBatcher

            self._batcher = AdaptiveBatcher(
                self.model.predict_many,
                self.model.predict,
                self._executor,
                max_rows=self.settings.max_batch_size,
                max_wait_s=self.settings.max_batch_time_ms / 1000.0,
                on_batch=self.metrics.batch_size.observe,
            )

    async def infer(self, inp: ModelInput) -> Any:
        assert self.model is not None
        if self._batcher is not None and inp.batch_key is not None:
            return await self._batcher.submit(inp)
        self.metrics.batch_size.observe(inp.rows or 1)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.model.predict, inp)

    async def run_script(self, raw_data: str) -> Any:
        assert self.script is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.script.run, raw_data)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
