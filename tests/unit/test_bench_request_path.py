"""The in-process request-path benchmark measures what it says: every scoring route answered, a whole
request costing more than the same request with its handler answering a fixed body, which costs more
than a bare Task."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from bench.request_path import ROUTES, measure
from examples.models import save_diabetes_regressor


def test_each_route_costs_more_whole_than_around_its_handler(tmp_path: Path) -> None:
    model_dir = save_diabetes_regressor(tmp_path / "diabetes")
    try:
        floor, results = asyncio.run(measure(model_dir, per_connection=20))
    finally:
        # Loading froze the collector's generations, as a server worker does after loading; not this
        # test process's: what it holds now must stay collectable (and be freed at exit).
        gc.unfreeze()
    assert set(results) == set(ROUTES)
    for route, (whole, around) in results.items():
        # A fixed answer skips decoding, predict and encoding: most of a 1-row request (~3.8 of 14.5 us
        # here). A fixed answer not swapped in would measure the whole request twice.
        assert 0 < floor < around < 0.75 * whole, (route, floor, around, whole)
