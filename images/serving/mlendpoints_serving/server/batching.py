"""Adaptive batching: concurrent inputs sharing a batch key go to one predict(), split back.

The first waiting input opens a batch; inputs already queued with the same key join
at once, and the batch waits at most `max_wait_s` for more, up to `max_rows` rows.
Batches run one at a time in the inference thread, so while one runs the next fills
(the busier the server, the larger the batches).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from mlendpoints_serving.model import ModelError, ModelInput

PredictMany = Callable[[Sequence[ModelInput]], list[Any]]
PredictOne = Callable[[ModelInput], Any]


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
    def __init__(
        self,
        predict_many: PredictMany,
        predict_one: PredictOne,
        executor: Executor,
        max_rows: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self._predict_many = predict_many
        self._predict_one = predict_one
        self._executor = executor
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._pending: collections.deque[tuple[ModelInput, asyncio.Future[Any]]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, inp: ModelInput) -> Any:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((inp, fut))
        self._wake.set()
        return await fut

    def _take(self, batch: list[tuple[ModelInput, asyncio.Future[Any]]], rows: int) -> int:
        """Move queued items with the batch's key into it, while they fit."""
        key = batch[0][0].batch_key
        kept: collections.deque[tuple[ModelInput, asyncio.Future[Any]]] = collections.deque()
        while self._pending:
            item = self._pending.popleft()
            n = item[0].rows or 0
            if item[1].done():
                continue  # its request timed out or went away
            if key is not None and item[0].batch_key == key and rows + n <= self._max_rows:
                batch.append(item)
                rows += n
            else:
                kept.append(item)
        self._pending = kept
        return rows

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            first = self._pending.popleft()
            if first[1].done():
                continue
            batch = [first]
            rows = first[0].rows or 0
            if first[0].batch_key is not None:
                rows = self._take(batch, rows)
                deadline = time.monotonic() + self._max_wait_s
                while rows < self._max_rows and (remaining := deadline - time.monotonic()) > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except TimeoutError:
                        break
                    rows = self._take(batch, rows)
            self._on_batch(rows)
            inputs = [item[0] for item in batch]
            try:
                results = await loop.run_in_executor(
                    self._executor, run_batch, self._predict_many, self._predict_one, inputs
                )
            except Exception as exc:
                results = [exc] * len(batch)
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
