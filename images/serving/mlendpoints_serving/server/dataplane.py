"""The data plane of one worker: loads the model (or scoring script) and runs inference off the event loop.

Transports call `infer()` / `run_script()` with already-decoded input; all blocking
work (loading, predict, the script's init/run) runs in one inference thread so the
event loop keeps serving health checks, metrics and request parsing.

A Python thread cannot be interrupted, so a prediction that hangs would hold the
worker forever while its health checks still pass. A watchdog on the event loop
reports one that has run past the stuck limit, and the worker exits so that the
pod restarts (as gunicorn's worker timeout does for Azure ML's server).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mlendpoints_serving import scoring_script
from mlendpoints_serving.server.settings import ServeSettings

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

    from mlendpoints_serving.model import ModelInput, ServedModel
    from mlendpoints_serving.server.batching import AdaptiveBatcher
    from mlendpoints_serving.server.metrics import Metrics

log = logging.getLogger("mlendpoints.serve")
P = ParamSpec("P")
T = TypeVar("T")


class InferenceThread(ThreadPoolExecutor):
    """The worker's one inference thread; it knows since when its current job has been running."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="inference")
        self.busy_since: float | None = None  # time.monotonic() at the job's start; None when idle

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return super().submit(self._timed, fn, *args, **kwargs)

    def mark_busy(self) -> None:
        """The current job starts a new unit of work (a batch): time it from now."""
        self.busy_since = time.monotonic()

    def _timed(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self.busy_since = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.busy_since = None


def load_scoring_script(
    path: os.PathLike[str] | str,
    model_dir: os.PathLike[str] | str,
    azureml_model_dir: os.PathLike[str] | str | None = None,
) -> ModuleType:
    """Import an Azure-style scoring script and call its init() (blocking)."""
    # Here, not at module level: an MLflow-model server never imports werkzeug.
    from mlendpoints_serving import azureml_services
    from mlendpoints_serving.azureml_services import aml_request

    azureml_services.install()  # `from azureml.contrib.services.aml_request import rawhttp`, as azmlinfsrv
    aml_request.reset()
    return scoring_script.load_scoring_script(
        path, model_dir, "run(raw_data)", azureml_model_dir=azureml_model_dir
    )


def _timed(call: Callable[[], Any], on_start: Callable[[float], None] | None) -> tuple[Any, float]:
    """run()'s result and its time in ms, measured in the inference thread (not the wait for it);
    on_start gets the moment it starts (perf_counter), for a limit on run() alone."""
    started = time.perf_counter()
    if on_start is not None:
        on_start(started)
    result = call()
    return result, (time.perf_counter() - started) * 1000


def _run_raw(call: Callable[[], Any]) -> Any:
    """A @rawhttp run(), in the inference thread: a returned response's body (maybe a generator) is
    read here too, not on the event loop."""
    from werkzeug.wrappers import Response

    result = call()
    if isinstance(result, Response):
        result.get_data()
    return result


def run_data_parameter(run: Callable[..., Any]) -> str | None:
    """azmlinfsrv (user_script._analyze_run): a run() with a `request_headers` parameter also gets the
    request's headers by that name, and the data by its first other parameter's name, returned here;
    None: run(data) as before. Such a run() is held to azmlinfsrv's rules, at load."""
    try:
        params = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError):  # no signature to read: called as run(data)
        return None
    if not any(param.name == "request_headers" for param in params):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(param.kind not in named for param in params):
        raise ImportError("run() cannot accept positional-only arguments, *args, or **kwargs.")
    others = [param.name for param in params if param.name != "request_headers"]
    if not others:
        raise ImportError('run() needs to accept an argument other than "request_headers".')
    return others[0]


def schema_parameters(run: Callable[..., Any]) -> tuple[inspect.Parameter, ...] | None:
    """azmlinfsrv (user_script._analyze_run): a run() decorated with inference-schema's @input_schema
    gets its arguments by name from the request's JSON object; these are its parameters (without
    `request_headers`). None: not decorated, or inference-schema is not installed."""
    try:
        from inference_schema.schema_util import is_schema_decorated
    except ImportError:
        return None
    if not is_schema_decorated(run):
        return None
    params = list(inspect.signature(run).parameters.values())
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(param.kind not in named for param in params):
        raise ImportError("run() cannot accept positional-only arguments, *args, or **kwargs.")
    data = tuple(param for param in params if param.name != "request_headers")
    if not data:
        raise ImportError("run() needs to accept an argument for input data.")
    return data


class DataPlane:
    def __init__(
        self,
        settings: ServeSettings,
        metrics: Metrics,
        workers_loaded: Synchronized[int] | None = None,
        on_stuck: Callable[[str], None] | None = None,
        worker: int = 0,
    ) -> None:
        self.settings = settings
        self.worker = worker  # this worker's index: with several GPUs, worker i loads on GPU i mod count
        self.metrics = metrics
        # Shared by the worker processes: the pod is ready only once every worker has loaded, so
        # no request reaches a worker still loading (they all accept on the one socket).
        self._workers_loaded = workers_loaded
        self.model: ServedModel | None = None
        self.script: ModuleType | None = None
        self.script_data_param: str | None = None  # set: run(<it>=data, request_headers=...)
        self.script_rawhttp = False  # @rawhttp: run() gets the request, an AMLRequest
        # @input_schema: run() gets these arguments by name from the request's JSON object
        self.script_schema_params: tuple[inspect.Parameter, ...] | None = None
        self.load_error: str | None = None
        self._executor = InferenceThread()
        self._batcher: AdaptiveBatcher | None = None
        # Called once with the reason when a prediction is stuck (None: nobody watches).
        self._on_stuck = on_stuck
        self._watchdog: asyncio.TimerHandle | None = None

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
                    self._executor,
                    load_scoring_script,
                    self.settings.scoring_script,
                    self.settings.model_dir,
                    self.settings.azureml_model_dir,
                )
                self.script_data_param = run_data_parameter(self.script.run)
                from mlendpoints_serving.azureml_services import aml_request

                self.script_rawhttp = aml_request.requested()
                self.script_schema_params = schema_parameters(self.script.run)
                if self.script_rawhttp and self.script_schema_params is not None:
                    raise ImportError("run() cannot be decorated with both @rawhttp and @input_schema")
            else:
                from mlendpoints_serving.model import load

                self.model = await loop.run_in_executor(
                    self._executor, load, self.settings.model_dir, self.settings.device, self.worker
                )
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            raise
        self.metrics.model_load_seconds.set(time.perf_counter() - started)
        if self.model is not None:
            self.metrics.model_device.labels(self.model.device or "cpu", self.model.device_name).set(1)
        if self._workers_loaded is not None:
            with self._workers_loaded.get_lock():
                self._workers_loaded.value += 1
        # The hundreds of thousands of objects from importing MLflow/pandas and loading the model
        # live as long as the process: out of the collector's reach, a full collection no longer
        # stalls requests for tens of milliseconds (p99 60 ms -> 13 ms in bench/serving.py).
        gc.collect()
        gc.freeze()
        if self._on_stuck is not None and self.settings.stuck_prediction_s > 0:
            self._watch(self._on_stuck)  # from now on: loading, however long, is over
        if self.model is not None and self._batches(self.model):
            from mlendpoints_serving.server.batching import AdaptiveBatcher

            self._batcher = AdaptiveBatcher(
                self.model.predict_many,
                self.model.predict,
                self._executor,
                max_rows=self.settings.max_batch_size,
                max_wait_s=self.settings.max_batch_time_ms / 1000.0,
                on_batch=self.metrics.batch_size.observe,
                on_start=self._executor.mark_busy,
            )

    def _batches(self, model: ServedModel) -> bool:
        """--batching on, or auto for a row-independent model; never with --max-batch-size 1."""
        from mlendpoints_serving.server.batching import batches_by_default

        mode = self.settings.batching
        on = mode == "on" or (mode == "auto" and batches_by_default(model.flavors, model.fast))
        on = on and self.settings.max_batch_size > 1
        log.info(
            "batching %s",
            "on" if on else "off",
            extra={
                "fields": {
                    "batching": mode,
                    "max_batch_size": self.settings.max_batch_size,
                    "max_batch_time_ms": self.settings.max_batch_time_ms,
                    "flavors": model.flavors,
                }
            },
        )
        return on

    @property
    def batching(self) -> bool:
        return self._batcher is not None

    async def infer(self, inp: ModelInput) -> Any:
        assert self.model is not None
        if self._batcher is not None:
            return await self._batcher.submit(inp)  # queued, or let by (`takes`) down this same path
        self.metrics.batch_size.observe(inp.rows or 1)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.model.predict, inp)

    async def run_script(
        self,
        raw_data: Any,
        headers: dict[str, str] | None = None,
        on_start: Callable[[float], None] | None = None,
    ) -> tuple[Any, float]:
        """run(raw_data), a str or with @rawhttp an AMLRequest, or with @input_schema run(**raw_data):
        its result and how long it ran (ms)."""
        assert self.script is not None
        if self.script_schema_params is not None:
            arguments = dict(raw_data)
            if self.script_data_param is not None:  # it takes request_headers too
                arguments["request_headers"] = headers or {}
            call = functools.partial(self.script.run, **arguments)
        elif self.script_data_param is None:
            call = functools.partial(self.script.run, raw_data)
        else:  # by name, as azmlinfsrv
            call = functools.partial(
                self.script.run, **{self.script_data_param: raw_data, "request_headers": headers or {}}
            )
        if self.script_rawhttp:
            call = functools.partial(_run_raw, call)
        return await asyncio.get_running_loop().run_in_executor(self._executor, _timed, call, on_start)

    def _watch(self, on_stuck: Callable[[str], None]) -> None:
        limit = self.settings.stuck_prediction_s
        since = self._executor.busy_since
        if since is not None and (running_s := time.monotonic() - since) >= limit:
            on_stuck(
                f"a prediction has been running for {running_s:.1f} s, stuck (limit {limit:g} s: "
                "--stuck-after-s, by default twice the request timeout); the worker exits to restart"
            )
            return
        # Checked at a quarter of the limit, at most each second: an idle worker wakes once a second.
        period = min(1.0, limit / 4)
        self._watchdog = asyncio.get_running_loop().call_later(period, self._watch, on_stuck)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
