"""Request decode and reply encode of each protocol's codec, in-process, on the same request.

The diabetes Ridge model (examples/models.py, 10 FP64 columns), 1-row and 100-row requests as
bench/serving.py sends them: `/invocations` as `dataframe_split`, V2 `infer` as one input per
column. Each cell is the best of ROUNDS timeit runs (the least disturbed by other work on the
machine), the two codecs timed in turns, in microseconds per call; the V2/MLflow ratio compares
two figures taken in the same run, which is what to compare across changes on a loaded machine.
No server, no HTTP: about 30 seconds.

    python -m bench.codecs [NUMBER_PER_RUN]
"""

from __future__ import annotations

import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.serving import V2, body
from examples.models import save_diabetes_regressor
from mlendpoints_serving.model import load
from mlendpoints_serving.server.codecs import MlflowCodec
from mlendpoints_serving.server.v2 import Requested, V2Codec

ROUNDS = 15
JSON = "application/json"


def best_us(a: Callable[[], object], b: Callable[[], object], number: int) -> tuple[float, float]:
    """Best of ROUNDS runs each, a and b in turns, so that load from other work hits both alike."""
    ta, tb = [], []
    for _ in range(ROUNDS):
        ta.append(timeit.timeit(a, number=number))
        tb.append(timeit.timeit(b, number=number))
    return min(ta) / number * 1e6, min(tb) / number * 1e6


def main() -> None:
    number = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    cache = Path(os.environ.get("MLENDPOINTS_CACHE", Path.home() / ".cache" / "mlendpoints"))
    model = load(save_diabetes_regressor(cache / "bench" / "diabetes"))
    mlflow, v2 = MlflowCodec(), V2Codec("model")
    print(f"{'rows':>4} {'step':<7} {'mlflow us':>10} {'v2 us':>8} {'v2/mlflow':>9}")
    for rows in (1, 100):
        invocations, infer = orjson.dumps(body("/invocations", rows)), orjson.dumps(body(V2, rows))
        m_inp, _ = mlflow.decode(model, invocations, JSON)
        v_inp, _ = v2.decode(model, infer, JSON, ())
        assert (m_inp.data == v_inp.data).all() and m_inp.batch_key == v_inp.batch_key
        predictions = model.predict(m_inp)
        n = max(number // rows, 200)
        times = {
            "decode": best_us(
                lambda: mlflow.decode(model, invocations, JSON),  # noqa: B023
                lambda: v2.decode(model, infer, JSON, ()),  # noqa: B023
                n,
            ),
            "encode": best_us(
                lambda: mlflow.encode(predictions, None),  # noqa: B023
                lambda: v2.encode(model, predictions, Requested(None, None, False)),  # noqa: B023
                n,
            ),
        }
        for step, (m, v) in times.items():
            print(f"{rows:>4} {step:<7} {m:>10.2f} {v:>8.2f} {v / m:>9.2f}")


if __name__ == "__main__":
    main()
