"""/invocations side by side with the real `mlflow models serve --env-manager local`: equal responses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.unit.serving.support import Server, mlflow_serve, serve

pytestmark = pytest.mark.slow


def frame_requests(
    cols: list[str], rows: list[list[float]], params: dict[str, Any] | None = None
) -> list[Any]:
    """The same frame in every JSON format `mlflow models serve` accepts, and as CSV."""
    extra = {"params": params} if params else {}
    return [
        ("application/json", {"dataframe_split": {"columns": cols, "data": rows}, **extra}),
        (
            "application/json",
            {"dataframe_split": {"columns": cols, "index": list(range(len(rows))), "data": rows}},
        ),
        ("application/json", {"dataframe_records": [dict(zip(cols, r, strict=True)) for r in rows], **extra}),
        ("application/json", {"instances": [dict(zip(cols, r, strict=True)) for r in rows]}),
        ("application/json", {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(cols)}, **extra}),
        ("text/csv", pd.DataFrame(rows, columns=cols).to_csv(index=False)),
    ]


CASES: dict[str, list[Any]] = {
    "diabetes": frame_requests(
        ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"],
        [
            [0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017],
            [0.1, -0.04, 0.2, 0, 1, 2, 3, -0.5, 0.25, 7],
        ],
    ),
    "iris": frame_requests(
        ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        [[5.1, 3.5, 1.4, 0.2], [6.3, 2.9, 5.6, 1.8], [5.9, 3.0, 4.2, 1.5]],
    ),
    "params": frame_requests(["a", "b"], [[1.0, 2.0], [3.5, -1.0]], params={"scale": 2.5, "offset": -1.0}),
    "tensor": [
        ("application/json", {"inputs": [[1.0, 2.0, 3.0, 4.0], [0.5, 0.25, 0.125, 1]]}),
        ("application/json", {"instances": [[1, 2, 3, 4]]}),
    ],
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(
    request: pytest.FixtureRequest, model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Server, Server]]:
    name = request.param
    logs = tmp_path_factory.mktemp(f"parity-{name}")
    with (
        serve(model_dirs[name], logs / "ours.log") as ours,
        mlflow_serve(model_dirs[name], logs / "mlflow.log") as ref,
    ):
        yield name, ours, ref


def test_invocations_equal_mlflow_models_serve(pair: tuple[str, Server, Server]) -> None:
    name, ours, ref = pair
    with ours.client() as a, ref.client() as b:
        for content_type, body in CASES[name]:
            kwargs: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
            headers = {"content-type": content_type}
            got, want = (
                a.post("/invocations", headers=headers, **kwargs),
                b.post("/invocations", headers=headers, **kwargs),
            )
            assert want.status_code == 200, want.text
            assert got.status_code == 200, got.text
            assert got.json() == want.json(), (content_type, body)
