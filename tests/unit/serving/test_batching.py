"""AdaptiveBatcher with a real model: batches respect size and keys, answers match unbatched ones."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mlendpoints_serving.model import ModelInput, ServedModel, load
from mlendpoints_serving.model.core import Format, dumps, jsonable
from mlendpoints_serving.server.batching import AdaptiveBatcher


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
