"""AdaptiveBatcher with a real model: batches respect size and keys, answers match unbatched ones.

Continuous batching: an input that finds the model idle runs at once and alone; inputs that
arrive while a prediction runs go together as the next batch; one of max_rows rows or more
bypasses the batcher; the fixed window, when set, gathers inputs that arrive during it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mlendpoints_serving.model import ModelInput, ServedModel, load
from mlendpoints_serving.model.core import Format, dumps, jsonable
from mlendpoints_serving.server.batching import AdaptiveBatcher, batches_by_default


@pytest.fixture(scope="module")
def model(params_model: Path) -> ServedModel:
    return load(params_model)


def run_concurrently(
    model: ServedModel, inputs: list[ModelInput], max_rows: int
) -> tuple[list[Any], list[list[Any]]]:
    batches: list[list[Any]] = []

    def predict_many(batch: Sequence[ModelInput]) -> list[Any]:
        batches.append([(i.rows, i.params) for i in batch])
        return model.predict_many(batch)

    async def go() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(predict_many, model.predict, pool, max_rows=max_rows, max_wait_s=0.05)
            return await asyncio.gather(*(batcher.submit(i) for i in inputs))

    return asyncio.run(go()), batches


def test_batches_hold_at_most_max_rows_and_never_mix_params(model: ServedModel) -> None:
    inputs = [
        model.decode(
            Format.SPLIT,
            {"columns": ["a", "b"], "data": [[float(n), 1.0]] * (1 + n % 3)},
            {"scale": float(n % 2)},
        )
        for n in range(30)
    ]
    results, batches = run_concurrently(model, inputs, max_rows=8)
    assert len(batches) < len(inputs)
    for batch in batches:
        assert sum(rows for rows, _ in batch) <= 8
        assert len({str(params) for _, params in batch}) == 1
    for inp, got in zip(inputs, results, strict=True):
        assert dumps(jsonable(got)) == dumps(jsonable(model.predict(inp)))


def test_a_failing_batch_fails_only_the_input_that_raises(tmp_path: Path) -> None:
    from mlendpoints_serving.model import ModelError
    from tests.unit.serving.support import save_behaving_model

    behaving = load(save_behaving_model(tmp_path / "behaving"))
    good = behaving.decode(Format.SPLIT, {"columns": ["x", "y"], "data": [[3.0, 1.0]]})
    bad = behaving.decode(Format.SPLIT, {"columns": ["x", "y"], "data": [[-3.0, 1.0]]})
    assert good.batch_key == bad.batch_key  # so they share one predict(), which raises

    async def go() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(
                behaving.predict_many, behaving.predict, pool, max_rows=8, max_wait_s=0.05
            )
            return await asyncio.gather(
                *(batcher.submit(i) for i in (good, bad, good)), return_exceptions=True
            )

    first, failed, last = asyncio.run(go())
    assert first.tolist() == last.tolist() == [2.0]
    assert isinstance(failed, ModelError) and failed.message == "the model refuses this input"


def row(model: ServedModel, n: int, rows: int = 1) -> ModelInput:
    return model.decode(Format.SPLIT, {"columns": ["a", "b"], "data": [[float(n), 1.0]] * rows})


class Recorder:
    """predict_many / predict_one that record their calls; the first predict_many can be held."""

    def __init__(self, model: ServedModel, hold_first: bool = False) -> None:
        self.model = model
        self.batches: list[list[int]] = []  # rows of each input, per predict_many call
        self.alone: list[int] = []  # rows of each input predicted by predict_one
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def predict_many(self, batch: Sequence[ModelInput]) -> list[Any]:
        self.batches.append([i.rows or 0 for i in batch])
        self.entered.set()
        self.release.wait(10)
        return self.model.predict_many(batch)

    def predict_one(self, inp: ModelInput) -> Any:
        self.alone.append(inp.rows or 0)
        return self.model.predict(inp)


async def wait_for(event: threading.Event) -> None:
    for _ in range(1000):
        if event.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the prediction never started")


def test_an_idle_model_runs_an_input_at_once_and_arrivals_meanwhile_go_as_the_next_batch(
    model: ServedModel,
) -> None:
    rec = Recorder(model, hold_first=True)
    starts: list[int] = []  # the stuck-prediction watchdog's clock restarts with each batch

    async def go() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(
                rec.predict_many, rec.predict_one, pool, max_rows=8, on_start=lambda: starts.append(1)
            )
            first = asyncio.ensure_future(batcher.submit(row(model, 0)))
            await wait_for(rec.entered)  # running alone: nothing waited for company
            later = [asyncio.ensure_future(batcher.submit(row(model, n, 1 + n % 2))) for n in range(1, 9)]
            await asyncio.sleep(0.05)  # all queued behind the running prediction
            rec.release.set()
            return await asyncio.gather(first, *later)

    results = asyncio.run(go())
    # 1 alone, then the 8 queued inputs (12 rows) in arrival order as batches of at most 8 rows
    assert rec.batches == [[1], [2, 1, 2, 1, 2], [1, 2, 1]]
    assert rec.alone == []
    assert len(starts) == len(rec.batches)
    for n, got in enumerate(results):
        expected = model.predict(row(model, n, 1 if n == 0 else 1 + n % 2))
        assert dumps(jsonable(got)) == dumps(jsonable(expected))


def test_an_input_of_max_rows_or_more_bypasses_the_batcher(model: ServedModel) -> None:
    rec = Recorder(model)

    async def go() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(rec.predict_many, rec.predict_one, pool, max_rows=4)
            # The decision submit() makes: the others are predicted alone, as with batching off.
            assert [batcher.takes(row(model, n, rows)) for n, rows in enumerate([4, 1, 9, 3])] == [
                False,
                True,
                False,
                True,
            ]
            return await asyncio.gather(
                *(batcher.submit(row(model, n, rows)) for n, rows in enumerate([4, 1, 9, 1]))
            )

    results = asyncio.run(go())
    assert sorted(rec.alone) == [4, 9]  # predicted as they are, as with batching off
    assert sorted(r for batch in rec.batches for r in batch) == [1, 1]
    for n, (rows, got) in enumerate(zip([4, 1, 9, 1], results, strict=True)):
        assert dumps(jsonable(got)) == dumps(jsonable(model.predict(row(model, n, rows))))


def test_the_fixed_window_gathers_inputs_that_arrive_during_it(model: ServedModel) -> None:
    rec = Recorder(model)

    async def go() -> list[Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = AdaptiveBatcher(rec.predict_many, rec.predict_one, pool, max_rows=8, max_wait_s=5.0)
            first = asyncio.ensure_future(batcher.submit(row(model, 0)))
            await asyncio.sleep(0.05)
            assert rec.batches == []  # still waiting for company
            rest = [asyncio.ensure_future(batcher.submit(row(model, n))) for n in range(1, 8)]
            # 8 rows: the batch is full and goes before its window ends
            return await asyncio.wait_for(asyncio.gather(first, *rest), 4.0)

    asyncio.run(go())
    assert rec.batches == [[1] * 8]


def test_batching_by_default_only_for_row_independent_flavours() -> None:
    assert batches_by_default(["python_function", "sklearn"], typed_signature=False)
    assert batches_by_default({"python_function": {}, "xgboost": {}}, typed_signature=True)
    assert batches_by_default(["python_function", "lightgbm"], typed_signature=True)
    assert batches_by_default(["python_function"], typed_signature=True)  # a pyfunc with a signature
    assert not batches_by_default(["python_function"], typed_signature=False)
    assert not batches_by_default(["python_function", "pytorch"], typed_signature=True)
    assert not batches_by_default(["python_function", "transformers"], typed_signature=True)
