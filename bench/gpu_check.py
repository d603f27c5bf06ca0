"""The GPU device check of issue 21, in one run (bench/gpu_check.sh sets up the environment and calls it).

On the machine it runs on, with the PyTorch MLP on the wine data (examples/torch_models.py, built here
with this machine's torch, MLflow's pickle format so that one model loads on both devices):

1. `mlendpoints-serve --device auto` with batching on (the GPU deployment's rendered defaults: one
   worker, maxBatchSize 64), and the same server with `--device cpu` (8 workers, one torch thread each);
2. predictions of both against `mlflow.pytorch.load_model(...)(x)` on the CPU, within float tolerance;
3. req/s and p99 at c=64 with 1-row requests, rows/s with 1,000-row requests (c=16), GPU against CPU;
   the GPU at maxBatchSize 1 (batching off), 16 and 256 too, which is how 64 is checked as the default;
   and a wider MLP (hidden 2048) at 1,000-row requests, where the GPU's arithmetic counts;
4. `mlendpoints-batch` over 100 CSV files of 1,000 rows on the GPU, and on the CPU, outputs compared.

Servers run on the first half of the cores (taskset), the load generator (bench/gpu_load.py) on the
other half. Without a GPU it still runs (the "GPU" server then says device cpu): the report says so.
Writes OUT/gpu_check.json, OUT/gpu_check.md (the table for docs/benchmarks.md) and OUT/logs.txt.

    python -m bench.gpu_check OUT [--seconds 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu_load import LoadResult, run
from examples.torch_models import save_wine_mlp, wine

ROWS_BIG = 1000
BATCH_FILES, BATCH_ROWS = 100, 1000
try:  # the GPU deployment's rendered default (render/gpu.py), when the control plane imports here
    from mlendpoints.render.gpu import GPU_DEFAULT_MAX_BATCH_SIZE
except Exception:
    GPU_DEFAULT_MAX_BATCH_SIZE = 64


def log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def cores() -> tuple[str, str, int]:
    """(server cores, load cores, server core count) as taskset lists: first half, second half."""
    n = len(os.sched_getaffinity(0))
    half = max(1, n // 2)
    if n < 2:
        return "0", "0", 1
    return f"0-{half - 1}", f"{half}-{n - 1}", half


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def post(url: str, body: bytes, timeout: float = 60.0) -> Any:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def server(
    model: Path, device: str, workers: int, max_batch: int, logs: Path, server_cores: str, name: str
) -> Iterator[dict[str, Any]]:
    port = free_port()
    serve = shutil.which("mlendpoints-serve") or "mlendpoints-serve"
    pin = ["taskset", "-c", server_cores] if shutil.which("taskset") else []
    argv = [*pin, serve, "--model-dir", str(model), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--device", device, "--workers", str(workers)]
    argv += ["--max-batch-size", str(max_batch), "--max-batch-time-ms", "0"]
    env = {
        **os.environ,
        # Batching on for PyTorch whatever the server's default for the flavour (the env form of
        # --batching: the GPU deployment's rendering passes --batching on); off at maxBatchSize 1.
        "MLENDPOINTS_SERVE_BATCHING": "on" if max_batch > 1 else "off",
        "OMP_NUM_THREADS": "1" if device == "cpu" else os.environ.get("OMP_NUM_THREADS", "4"),
        "MLENDPOINTS_TERMINATION_LOG": str(logs / f"{name}.termination"),
    }
    log_file = logs / f"{name}.log"
    started = time.perf_counter()
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}: {log_file.read_text()[-3000:]}")
            try:
                get(url + "/health", 2)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} not ready after 180 s: {log_file.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
        meta = json.loads(get(f"{url}/v2/models/model"))
        info = {
            "url": url,
            "ready_s": round(time.perf_counter() - started, 1),
            "device": meta.get("parameters", {}).get("device"),
            "device_name": meta.get("parameters", {}).get("device_name"),
            "workers": workers,
            "max_batch_size": max_batch,
        }
        log(f"{name}: ready in {info['ready_s']} s on {info['device']} ({info['device_name']})")
        yield info
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def as_array(predictions: Any) -> np.ndarray[Any, Any]:
    """The reply's predictions as an array: a column model's are records {"0": .., "1": .., "2": ..}."""
    if predictions and isinstance(predictions[0], dict):
        predictions = [list(record.values()) for record in predictions]
    return np.asarray(predictions, dtype=np.float32)


def body(rows: np.ndarray[Any, Any], columns: list[str]) -> bytes:
    return json.dumps({"input_data": {"columns": columns, "data": rows.tolist()}}).encode()


def load(
    url: str, payload: bytes, connections: int, seconds: float, rows: int, load_cores: str
) -> LoadResult:
    # The load generator runs in its own processes, on the other half of the cores.
    os.sched_setaffinity(0, _cpu_set(load_cores))
    try:
        return run(url + "/score", payload, connections, seconds, processes=4, rows=rows)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def _cpu_set(spec: str) -> set[int]:
    lo, _, hi = spec.partition("-")
    return set(range(int(lo), int(hi or lo) + 1))


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_runtime": torch.version.cuda,
        "cpus": len(os.sched_getaffinity(0)),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpus"] = torch.cuda.device_count()
    with contextlib.suppress(Exception):
        env["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    return env


def batch_run(model: Path, inputs: Path, out: Path, gpu: bool, workers: int, logs: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1" if not gpu else os.environ.get("OMP_NUM_THREADS", "4")}
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    name = "batch-gpu" if gpu else "batch-cpu"
    argv = [shutil.which("mlendpoints-batch") or "mlendpoints-batch", "--model-dir", str(model)]
    argv += ["--input", str(inputs), "--output", str(out), "--mini-batch-size", "10"]
    argv += ["--max-concurrency", str(workers)]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - started
    (logs / f"{name}.log").write_text(proc.stdout + proc.stderr)
    devices = sorted({line.split('"device":"', 1)[1].split('"', 1)[0] for line in proc.stderr.splitlines()
                      if '"device":"' in line})  # fmt: skip
    result: dict[str, Any] = {"rc": proc.returncode, "seconds": round(seconds, 2), "workers": workers}
    result["devices_logged"] = devices
    predictions = out / "predictions.csv"
    if proc.returncode == 0 and predictions.exists():
        import pandas as pd

        frame = pd.read_csv(predictions)
        result["rows"] = len(frame)
        result["rows_per_s"] = round(len(frame) / seconds, 1)
    return result


def check(out: Path, seconds: float) -> dict[str, Any]:
    import pandas as pd
    import torch

    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/mlendpoints-gpu-check"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logs = work / "logs"
    logs.mkdir()
    server_cores, load_cores, n_server = cores()
    report: dict[str, Any] = {"environment": environment(), "server_cores": server_cores}
    report["measured_on_gpu"] = bool(report["environment"]["cuda_available"])
    log(f"environment: {report['environment']}")

    t0 = time.perf_counter()
    mlp = save_wine_mlp(work / "wine-mlp", columns=True)
    wide = save_wine_mlp(work / "wine-wide", columns=True, hidden=2048, epochs=20)  # for timing only
    report["models_s"] = round(time.perf_counter() - t0, 1)
    from sklearn.datasets import load_wine

    columns = [str(c) for c in load_wine().feature_names]
    x, _ = wine()
    rng = np.random.default_rng(0)
    big = x[rng.integers(0, len(x), ROWS_BIG)] * rng.normal(1.0, 0.05, (ROWS_BIG, x.shape[1])).astype(
        np.float32
    )

    import mlflow.pytorch

    def reference(model: Path, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        module = mlflow.pytorch.load_model(str(model), map_location="cpu")
        with torch.no_grad():
            return np.asarray(module(torch.from_numpy(rows.astype(np.float32))).numpy())

    expected = {"wine": reference(mlp, x), "big": reference(mlp, big)}
    one_row = body(x[:1], columns)
    big_body = body(big, columns)
    results: dict[str, Any] = {}

    def equality(info: dict[str, Any]) -> dict[str, Any]:
        got_wine = as_array(post(info["url"] + "/score", body(x, columns)))
        got_big = as_array(post(info["url"] + "/score", big_body))
        diff = max(
            float(np.abs(got_wine - expected["wine"]).max()), float(np.abs(got_big - expected["big"]).max())
        )
        scale = float(np.abs(expected["big"]).max())
        ok = np.allclose(got_wine, expected["wine"], rtol=1e-4, atol=1e-4 * scale) and np.allclose(
            got_big, expected["big"], rtol=1e-4, atol=1e-4 * scale
        )
        return {"max_abs_diff": diff, "max_abs_value": scale, "equal_within_1e-4": bool(ok)}

    configs = [
        ("gpu", mlp, "auto", 1, GPU_DEFAULT_MAX_BATCH_SIZE),
        ("cpu", mlp, "cpu", n_server, GPU_DEFAULT_MAX_BATCH_SIZE),
    ]
    for name, model, device, workers, max_batch in configs:
        with server(model, device, workers, max_batch, logs, server_cores, name) as info:
            entry: dict[str, Any] = {"server": info, "equality": equality(info)}
            log(f"{name}: equality {entry['equality']}")
            entry["c64_1row"] = asdict(load(info["url"], one_row, 64, seconds, 1, load_cores))
            log(f"{name}: c=64 1-row {entry['c64_1row']}")
            entry["c16_1000rows"] = asdict(load(info["url"], big_body, 16, seconds, ROWS_BIG, load_cores))
            log(f"{name}: c=16 1000-row {entry['c16_1000rows']}")
            results[name] = entry

    sweep: dict[str, Any] = {}
    for max_batch in (1, 16, 256):
        with server(mlp, "auto", 1, max_batch, logs, server_cores, f"gpu-batch-{max_batch}") as info:
            sweep[str(max_batch)] = asdict(load(info["url"], one_row, 64, seconds, 1, load_cores))
            log(f"gpu maxBatchSize {max_batch}: {sweep[str(max_batch)]}")
    sweep[str(GPU_DEFAULT_MAX_BATCH_SIZE)] = results["gpu"]["c64_1row"]
    results["gpu_batch_size_sweep_c64_1row"] = sweep

    wide_expected = reference(wide, big)
    for name, device, workers in (("gpu-wide", "auto", 1), ("cpu-wide", "cpu", n_server)):
        with server(wide, device, workers, GPU_DEFAULT_MAX_BATCH_SIZE, logs, server_cores, name) as info:
            got = as_array(post(info["url"] + "/score", big_body))
            scale = float(np.abs(wide_expected).max())
            results[name] = {
                "server": info,
                "equal_within_1e-4": bool(np.allclose(got, wide_expected, rtol=1e-4, atol=1e-4 * scale)),
                "max_abs_diff": float(np.abs(got - wide_expected).max()),
                "c16_1000rows": asdict(load(info["url"], big_body, 16, seconds, ROWS_BIG, load_cores)),
            }
            log(f"{name}: {results[name]['c16_1000rows']}")

    inputs = work / "batch-in"
    inputs.mkdir()
    for i in range(BATCH_FILES):
        rows = x[rng.integers(0, len(x), BATCH_ROWS)].astype(np.float64)
        pd.DataFrame(rows, columns=columns).to_csv(inputs / f"part-{i:03d}.csv", index=False)
    batch: dict[str, Any] = {"files": BATCH_FILES, "rows_per_file": BATCH_ROWS}
    batch["gpu"] = batch_run(mlp, inputs, work / "batch-out-gpu", True, 1, logs)
    log(f"batch gpu: {batch['gpu']}")
    batch["cpu"] = batch_run(mlp, inputs, work / "batch-out-cpu", False, n_server, logs)
    log(f"batch cpu: {batch['cpu']}")
    if batch["gpu"].get("rows") and batch["cpu"].get("rows"):
        a = pd.read_csv(work / "batch-out-gpu" / "predictions.csv").sort_values(["file_name", "row"])
        b = pd.read_csv(work / "batch-out-cpu" / "predictions.csv").sort_values(["file_name", "row"])
        values = [c for c in a.columns if c not in ("file_name", "row")]
        batch["gpu_equals_cpu_within_1e-4"] = bool(
            np.allclose(a[values].to_numpy(), b[values].to_numpy(), rtol=1e-4, atol=1e-3)
        )
    results["batch"] = batch
    report["results"] = results

    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    with open(out / "logs.txt", "w") as fh:
        for f in sorted(logs.iterdir()):
            fh.write(f"==> {f.name} <==\n{f.read_text(errors='replace')[-20000:]}\n")
    return report


def markdown(report: dict[str, Any]) -> str:
    env, r = report["environment"], report["results"]
    where = (
        f"measured on the lent {env.get('gpu', 'GPU')} ({env.get('driver', '')}), torch {env['torch']}"
        if report["measured_on_gpu"]
        else f"NO GPU VISIBLE: the 'GPU' rows ran on the CPU (torch {env['torch']}); not a GPU measurement"
    )
    lines = [
        f"PyTorch MLP on the wine data (13 -> 64 -> 64 -> 3), {where}, {env['cpus']} CPUs; servers on "
        f"cores {report['server_cores']}, load on the others.",
        "",
        "| server | device | c=64, 1-row: req/s | p99 ms | c=16, 1,000-row: rows/s | p99 ms | equal to "
        "mlflow.pytorch (1e-4) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("gpu", "cpu"):
        e = r[name]
        s, one, big = e["server"], e["c64_1row"], e["c16_1000rows"]
        lines.append(
            f"| {name} ({s['workers']} worker(s), maxBatchSize {s['max_batch_size']}) | {s['device']} | "
            f"{one['rps']:,.0f} | {one['p99_ms']} | {big['rows_per_s']:,.0f} | {big['p99_ms']} | "
            f"{e['equality']['equal_within_1e-4']} (max diff {e['equality']['max_abs_diff']:.2e}) |"
        )
    lines += ["", "| GPU maxBatchSize (c=64, 1-row) | req/s | p50 ms | p99 ms |", "|---|---|---|---|"]
    for size, res in sorted(r["gpu_batch_size_sweep_c64_1row"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {size} | {res['rps']:,.0f} | {res['p50_ms']} | {res['p99_ms']} |")
    lines += [
        "",
        "| wide MLP (hidden 2048), c=16, 1,000-row | device | rows/s | p99 ms |",
        "|---|---|---|---|",
    ]
    for name in ("gpu-wide", "cpu-wide"):
        e = r[name]
        lines.append(
            f"| {name} | {e['server']['device']} | {e['c16_1000rows']['rows_per_s']:,.0f} | "
            f"{e['c16_1000rows']['p99_ms']} |"
        )
    b = r["batch"]
    lines += [
        "",
        f"mlendpoints-batch, {b['files']} CSV files x {b['rows_per_file']:,} rows: GPU (1 worker, devices "
        f"{b['gpu'].get('devices_logged')}) {b['gpu'].get('rows_per_s', 'failed')} rows/s in "
        f"{b['gpu']['seconds']} s; CPU ({b['cpu']['workers']} workers) "
        f"{b['cpu'].get('rows_per_s', 'failed')} rows/s in {b['cpu']['seconds']} s; "
        f"outputs equal: {b.get('gpu_equals_cpu_within_1e-4')}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=8.0)
    a = parser.parse_args()
    started = time.perf_counter()
    report = check(a.out, a.seconds)
    log(f"done in {time.perf_counter() - started:.0f} s")
    print(markdown(report))


if __name__ == "__main__":
    main()
