"""A PyTorch MLflow model (an MLP on the wine data) served by `mlendpoints-serve` on the CPU, as a GPU
deployment serves it on its GPU: `--device auto` (torch installed, no CUDA visible: the CPU), batching
on, predictions equal to `mlflow.pytorch.load_model(...)(x)`, the device in /metrics and in the V2
metadata, a CUDA out-of-memory error as a 507 with the worker going on, a poisoned CUDA context ending
the worker with the reason in the termination log. The model raises torch's own CUDA exceptions on
marked rows, so that these paths run without a GPU (bench/gpu_check.sh runs the real thing).
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from examples.torch_models import DEVICE_ASSERT_MARKER, OOM_MARKER, save_wine_mlp, wine
from tests.unit.serving.support import BIN, Server, serve

torch = pytest.importorskip("torch", reason="torch is in the [test] extra; without it: pip install .[torch]")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: these test the CPU")

# Batching on whatever the server's default for the flavour (the env form of --batching, which older
# servers ignore), up to 64 rows, as a GPU deployment is rendered.
BATCHING = ("--max-batch-size", "64", "--max-batch-time-ms", "5")
BATCH_ENV = {"MLENDPOINTS_SERVE_BATCHING": "on"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("torch-models")
    return {
        "mlp": save_wine_mlp(root / "mlp"),  # MLflow's default format: pt2 (torch.export)
        "behaving": save_wine_mlp(root / "behaving", behaving=True),
    }


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("torch-serve") / "serve.log"
    with serve(models["mlp"], log, "--device", "auto", *BATCHING, env=BATCH_ENV) as s:
        yield s


def reference(model_dir: Path, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    import mlflow.pytorch

    module = mlflow.pytorch.load_model(str(model_dir))
    with torch.no_grad():
        out: np.ndarray[Any, Any] = module(torch.from_numpy(x)).numpy()
    return out


def score(s: Server, rows: np.ndarray[Any, Any] | list[list[float]]) -> Any:
    data = rows.tolist() if isinstance(rows, np.ndarray) else rows
    with s.client() as c:
        return c.post("/score", json={"input_data": data})


def test_auto_serves_on_the_cpu_and_says_so(server: Server) -> None:
    with server.client() as c:
        metrics = c.get("/metrics").text
        meta = c.get("/v2/models/model").json()
    assert re.search(r'mlendpoints_model_device\{device="cpu",device_name="cpu"\} 1\.0', metrics), metrics
    assert meta["parameters"] == {"device": "cpu", "device_name": "cpu"}
    assert meta["inputs"] == [{"name": "tensor0", "datatype": "FP32", "shape": [-1, 13]}]
    loaded = [json.loads(line) for line in server.log.read_text().splitlines() if '"model loaded"' in line]
    assert loaded and loaded[0]["device"] == "cpu" and loaded[0]["device_name"] == "cpu", loaded


def test_predictions_equal_mlflow_pytorch_load_model(server: Server, models: dict[str, Path]) -> None:
    x, _ = wine()
    expected = reference(models["mlp"], x)
    # The whole data set in one request, then row by row.
    whole = score(server, x)
    assert whole.status_code == 200, whole.text
    np.testing.assert_array_equal(np.asarray(whole.json(), dtype=np.float32), expected)
    for i in (0, 77, 177):
        one = score(server, x[i : i + 1])
        np.testing.assert_allclose(np.asarray(one.json(), dtype=np.float32), expected[i : i + 1], rtol=1e-6)


def test_a_column_signature_model_answers_records_as_mlflow_does(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """The wine columns as doubles (what the batch driver reads from CSV): mlflow.pytorch answers a
    DataFrame with columns 0, 1, 2, written as records with string keys, as `mlflow models serve` does."""
    from sklearn.datasets import load_wine

    model = save_wine_mlp(tmp_path / "columns", columns=True)
    names = [str(n) for n in load_wine().feature_names]
    x, _ = wine()
    expected = reference(model, x[:20])
    with serve(model, tmp_path / "columns.log", *BATCHING, env=BATCH_ENV) as s, s.client() as c:
        reply = c.post(
            "/score", json={"input_data": {"columns": names, "data": x[:20].astype(float).tolist()}}
        )
    assert reply.status_code == 200, reply.text
    records = reply.json()
    assert list(records[0]) == ["0", "1", "2"]
    got = np.asarray([list(r.values()) for r in records], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_concurrent_one_row_requests_are_batched_and_each_gets_its_own_rows(
    server: Server, models: dict[str, Path]
) -> None:
    x, _ = wine()
    expected = reference(models["mlp"], x)

    def batch_rows() -> tuple[float, float]:
        with server.client() as c:
            text = c.get("/metrics").text
        total = float(re.search(r"^mlendpoints_batch_rows_sum ([0-9.e+]+)$", text, re.M).group(1))  # type: ignore[union-attr]
        calls = float(re.search(r"^mlendpoints_batch_rows_count ([0-9.e+]+)$", text, re.M).group(1))  # type: ignore[union-attr]
        return total, calls

    rows_before, calls_before = batch_rows()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda i: score(server, x[i : i + 1]), range(len(x))))
    for i, reply in enumerate(replies):
        assert reply.status_code == 200, reply.text
        # Batched with others: the same values, up to the last bits of a differently blocked float32
        # matmul (seen in CI: 1.5e-6 absolute on an output of 0.053, so an absolute floor too).
        np.testing.assert_allclose(
            np.asarray(reply.json(), dtype=np.float32), expected[i : i + 1], rtol=1e-5, atol=1e-5
        )
    rows_after, calls_after = batch_rows()
    assert rows_after - rows_before == len(x)
    assert calls_after - calls_before < len(x), "no two requests shared a predict()"


def test_a_cuda_out_of_memory_error_is_a_507_and_the_worker_goes_on(
    models: dict[str, Path], tmp_path: Path
) -> None:
    x, _ = wine()
    marked = x[:1].copy()
    marked[0, 0] = OOM_MARKER
    with serve(models["behaving"], tmp_path / "oom.log", *BATCHING, env=BATCH_ENV) as s:
        # Alongside good requests, batched with them: only the marked one fails.
        bodies = [marked if i == 5 else x[i : i + 1] for i in range(24)]
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            replies = list(pool.map(lambda rows: score(s, rows), bodies))
        oom = replies.pop(5)
        assert oom.status_code == 507, oom.text
        assert oom.headers["content-type"] == "application/json"
        err = oom.json()["error"]
        assert err["code"] == "device_out_of_memory"
        assert "CUDA out of memory on cpu" in err["message"] and "OutOfMemoryError" in err["message"]
        assert "Tried to allocate 40.00 GiB" in err["message"]
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
        # The V2 route answers in its own error form, and the worker is still the same process.
        with s.client() as c:
            v2 = c.post(
                "/v2/models/model/infer",
                json={
                    "inputs": [{"name": "x", "shape": [1, 13], "datatype": "FP32", "data": marked.tolist()}]
                },
            )
        assert v2.status_code == 507 and "CUDA out of memory" in v2.json()["error"], v2.text
        assert score(s, x[:2]).status_code == 200
        assert s.process is not None and s.process.poll() is None


def test_a_poisoned_cuda_context_ends_the_worker_with_the_reason(
    models: dict[str, Path], tmp_path: Path
) -> None:
    x, _ = wine()
    marked = x[:1].copy()
    marked[0, 0] = DEVICE_ASSERT_MARKER
    termination = tmp_path / "termination-log"
    env = {**BATCH_ENV, "MLENDPOINTS_TERMINATION_LOG": str(termination)}
    with serve(models["behaving"], tmp_path / "lost.log", *BATCHING, env=env) as s:
        assert score(s, x[:3]).status_code == 200
        lost = score(s, marked)
        assert lost.status_code == 503, lost.text
        err = lost.json()["error"]
        assert err["code"] == "device_lost"
        assert "device-side assert triggered" in err["message"] and "the worker exits" in err["message"]
        assert s.process is not None
        s.process.wait(timeout=20)
        assert s.process.returncode == 1
    message = termination.read_text()
    assert message.startswith("mlendpoints-serve failed: the CUDA context on cpu is unusable after "), message
    assert "AcceleratorError: CUDA error: device-side assert triggered" in message


def test_device_cuda_without_a_gpu_fails_to_load_naming_why(models: dict[str, Path], tmp_path: Path) -> None:
    import subprocess

    termination = tmp_path / "termination-log"
    argv = [str(BIN / "mlendpoints-serve"), "--model-dir", str(models["mlp"]), "--port", "0"]
    proc = subprocess.run(
        [*argv, "--workers", "1", "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"MLENDPOINTS_TERMINATION_LOG": str(termination), "PATH": str(BIN)},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    message = termination.read_text()
    assert message.startswith(f"mlendpoints-serve failed: cannot load {models['mlp']}"), message
    assert "--device cuda: no CUDA device is visible" in message
