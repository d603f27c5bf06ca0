"""Continuous batching: concurrent inputs sharing a batch key go to one predict(), split back.

Nothing waits for nothing:

- an input that finds the model idle runs at once, alone (the idle path costs what no
  batching costs: one hand-over to the inference thread and one back);
- inputs that arrive while a prediction runs queue up, and the inference thread takes
  them as its next batch the moment it is free, without going back to the event loop
  in between: up to `max_rows` rows of one batch key, the oldest input first;
- an input of `max_rows` rows or more bypasses the batcher: it is predicted as it is,
  as with batching off;
- a fixed window (`max_wait_s`, off by default) makes a batch wait that long for more
  rows before it runs, for models whose predict() costs much more per call than per row.

The busier the server, the larger the batches; an idle server adds no delay.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from mlendpoints_serving.model import ModelError, ModelInput

PredictMany = Callable[[Sequence[ModelInput]], list[Any]]
PredictOne = Callable[[ModelInput], Any]
Item = tuple[ModelInput, "asyncio.Future[Any]"]
# Batches one executor job runs back to back before it queues itself again behind the executor's
# other jobs (a request that bypassed the batcher): fewer hand-overs, no starvation.
BATCHES_PER_JOB = 8

# Flavours whose predict() is row-independent (row i of a batch's output depends on row i of its
# input only), where batching is on by default. A model with only the python_function flavour (a
# custom PythonModel) counts too when its signature has tensors or columns; `--batching off`
# (the OnlineDeployment's batching.enabled: false) is for one whose rows depend on each other.
ROW_INDEPENDENT_FLAVORS = frozenset({"sklearn", "xgboost", "lightgbm"})


def batches_by_default(flavors: Mapping[str, Any] | Sequence[str], typed_signature: bool) -> bool:
    """Whether `--batching auto` batches a model with these MLmodel flavours.

    `typed_signature`: the signature has tensors or scalar columns (the fast path; without
    it inputs have no batch key and are never batched anyway).
    """
    names = set(flavors)
    if names & ROW_INDEPENDENT_FLAVORS:
        return True
    return names == {"python_function"} and typed_signature


def run_batch(predict_many: PredictMany, predict_one: PredictOne, inputs: Sequence[ModelInput]) -> list[Any]:
    """Result or exception per input; if the batch fails, each runs alone so only the culprit fails."""
    try:
        return list(predict_many(inputs))
    except ModelError:
        if len(inputs) == 1:
            raise
    results: list[Any] = []
    for inp in inputs:
        try:
            results.append(predict_one(inp))
        except Exception as exc:
            results.append(exc)
    return results


class AdaptiveBatcher:
    """Call `submit()` from the event loop; predictions run in `executor` (one inference thread).

    The queue lives between the loop and the inference thread, under a lock. One batch job
    at a time is in the executor: it runs batches while inputs are waiting (up to
    BATCHES_PER_JOB, then it queues itself again), so under load the thread goes from batch
    to batch without waiting on the loop. `on_start` is called as each batch starts (the
    stuck-prediction watchdog times each batch, not the job).
    """

    def __init__(
        self,
        predict_many: PredictMany,
        predict_one: PredictOne,
        executor: Executor,
        max_rows: int,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int], None] = lambda rows: None,
        on_start: Callable[[], None] = lambda: None,
    ) -> None:
        self._predict_many = predict_many
        self._predict_one = predict_one
        self._executor = executor
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._on_start = on_start
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # for the fixed window only
        self._pending: collections.deque[Item] = collections.deque()
        self._scheduled = False  # a batch job is in the executor (queued or running)
        self._loop: asyncio.AbstractEventLoop | None = None

    def takes(self, inp: ModelInput) -> bool:
        """Whether `submit` would queue `inp` (else it bypasses: predicted alone, as with batching off)."""
        return inp.batch_key is not None and (inp.rows or 0) < self._max_rows

    async def submit(self, inp: ModelInput) -> Any:
        loop = asyncio.get_running_loop()
        if not self.takes(inp):
            # Bypass: as large as a batch already (or not batchable); batching would only delay it.
            # What batching off does: the batch-size metric, then predict alone on the same executor.
            self._on_batch(inp.rows or 1)
            return await loop.run_in_executor(self._executor, self._predict_one, inp)
        self._loop = loop
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._pending.append((inp, fut))
            start = not self._scheduled
            self._scheduled = True
            if self._max_wait_s > 0:
                self._arrived.notify()
        if start:
            self._schedule()
        return await fut

    def _schedule(self) -> None:
        try:
            self._executor.submit(self._run_next)
        except RuntimeError as exc:  # the executor is shut down: the worker is stopping
            with self._lock:
                failed, self._pending = list(self._pending), collections.deque()
                self._scheduled = False
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._deliver, failed, [exc] * len(failed))

    def _take(self) -> tuple[list[Item], int]:
        """(the next batch, its rows): the oldest input, then later ones of its key while they fit."""
        batch: list[Item] = []
        rows = 0
        key = None
        kept: collections.deque[Item] = collections.deque()
        while self._pending:
            item = self._pending.popleft()
            if item[1].done():
                continue  # its request timed out or went away
            n = item[0].rows or 0
            if not batch:
                batch.append(item)
                rows, key = n, item[0].batch_key
            elif item[0].batch_key == key and rows + n <= self._max_rows:
                batch.append(item)
                rows += n
            else:
                kept.append(item)
        self._pending = kept
        return batch, rows

    def _fill(self, batch: list[Item], rows: int) -> int:
        """The fixed window: wait up to max_wait_s for more rows of the batch's key (lock held)."""
        deadline = time.monotonic() + self._max_wait_s
        key = batch[0][0].batch_key
        while rows < self._max_rows and (remaining := deadline - time.monotonic()) > 0:
            self._arrived.wait(remaining)
            kept: collections.deque[Item] = collections.deque()
            while self._pending:
                item = self._pending.popleft()
                n = item[0].rows or 0
                if item[0].batch_key == key and rows + n <= self._max_rows and not item[1].done():
                    batch.append(item)
                    rows += n
                else:
                    kept.append(item)
            self._pending = kept
        return rows

    def _run_next(self) -> None:
        """Batches, in the inference thread, while inputs are waiting; then queue again or stop."""
        for _ in range(BATCHES_PER_JOB):
            with self._lock:
                batch, rows = self._take()
                if batch and self._max_wait_s > 0:
                    rows = self._fill(batch, rows)
                if not batch:
                    self._scheduled = False
                    return
            results: list[Any]
            try:
                self._on_start()
                self._on_batch(rows)
                results = run_batch(self._predict_many, self._predict_one, [item[0] for item in batch])
            except Exception as exc:
                results = [exc] * len(batch)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._deliver, batch, results)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                with self._lock:
                    self._scheduled = False
                return
        with self._lock:
            self._scheduled = bool(self._pending)
            more = self._scheduled
        if more:
            self._schedule()

    @staticmethod
    def _deliver(batch: Sequence[Item], results: Sequence[Any]) -> None:
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
