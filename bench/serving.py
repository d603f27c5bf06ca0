"""Benchmark of `mlendpoints-serve` against `mlflow models serve` (the anchor), in the same run.

Workload (issue 3): the diabetes Ridge model, single-row requests, 32 concurrent
keep-alive connections from wrk (Lua script for the POST body). The server (one
worker) is pinned to CPU 0 with taskset, wrk to CPU 1. Reported: requests/s, p50/p99,
the ratio to `mlflow models serve -w 1 --env-manager local`, start-to-ready seconds
and RSS of the worker, with batching off and on.

    python -m bench.serving [SECONDS_PER_RUN]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.report import table, write_section
from examples.models import save_diabetes_regressor

BIN = Path(sys.executable).parent
SERVER_CPU, LOAD_CPU = "0", "1"
CONNECTIONS = 32
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW = [0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]
BODIES = {
    "/score": {"input_data": {"columns": COLUMNS, "data": [ROW]}},
    "/invocations": {"dataframe_split": {"columns": COLUMNS, "data": [ROW]}},
}
TARGETS = (
    "batching off: >= 1,500 req/s, >= 10x mlflow serve, p99 <= 30 ms; batching on: >= 5,000 req/s, "
    "p99 <= 20 ms; start to ready <= 3 s; RSS <= 250 MB per worker"
)


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


def rss_mb(pid: int) -> float:
    """Resident memory of the process serving requests (the deepest descendant: mlflow runs uvicorn below)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    if kids:
        return rss_mb(int(kids[-1]))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parse_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, body: Mapping[str, object], seconds: int, scratch: Path) -> Load:
    script = scratch / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = parse_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Load(rps, p50, p99, errors)


def run_server(
    argv: list[str],
    port: int,
    routes: list[str],
    seconds: int,
    scratch: Path,
    env: dict[str, str] | None = None,
) -> tuple[float, float, dict[str, Load]]:
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        ready_s = wait_ready(f"http://127.0.0.1:{port}/ping", proc)
        results = {
            route: wrk(f"http://127.0.0.1:{port}{route}", BODIES[route], seconds, scratch) for route in routes
        }
        return ready_s, rss_mb(proc.pid), results
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 10
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("bench.serving: needs wrk and taskset")
        return 1
    cache = Path(os.environ.get("MLENDPOINTS_CACHE", Path.home() / ".cache" / "mlendpoints"))
    model = save_diabetes_regressor(cache / "bench" / "diabetes")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        port = free_port()
        mlflow = [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-w",
            "1",
            "--env-manager",
            "local",
        ]
        path_env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # it runs uvicorn through bash
        ready, rss, anchor = run_server(mlflow, port, ["/invocations"], seconds, scratch, env=path_env)
        base = anchor["/invocations"]
        rows.append(
            [
                "mlflow models serve -w 1 (anchor)",
                "/invocations",
                "-",
                f"{base.rps:,.0f}",
                f"{base.p50_ms:.1f}",
                f"{base.p99_ms:.1f}",
                "1.0x",
                base.errors,
                f"{ready:.2f}",
                f"{rss:.0f}",
            ]
        )
        for label, extra in (
            ("off", []),
            ("on (32 rows, 2 ms)", ["--max-batch-size", "32", "--max-batch-time-ms", "2"]),
        ):
            port = free_port()
            ours = [
                str(BIN / "mlendpoints-serve"),
                "--model-dir",
                str(model),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
                *extra,
            ]
            ready, rss, results = run_server(ours, port, list(BODIES), seconds, scratch)
            for route, load in results.items():
                rows.append(
                    [
                        "mlendpoints-serve",
                        route,
                        label,
                        f"{load.rps:,.0f}",
                        f"{load.p50_ms:.1f}",
                        f"{load.p99_ms:.1f}",
                        f"{load.rps / base.rps:.1f}x",
                        load.errors,
                        f"{ready:.2f}",
                        f"{rss:.0f}",
                    ]
                )
    load_avg = os.getloadavg()
    body = (
        f"Diabetes Ridge (examples/models.py), one row per request, {CONNECTIONS} keep-alive connections, "
        f"{seconds} s per run; server pinned to CPU {SERVER_CPU}, wrk to CPU {LOAD_CPU}. Ratio = requests/s "
        "over the anchor's /invocations requests/s in this run (mlflow serve has no /score). "
        "Errors = non-2xx responses + socket errors. RSS of the serving process after the load.\n\n"
        + table(
            [
                "server",
                "route",
                "batching",
                "req/s",
                "p50 ms",
                "p99 ms",
                "ratio",
                "errors",
                "start to ready s",
                "RSS MB",
            ],
            rows,
        )
        + f"\n\nTargets (issue 3): {TARGETS}.\n\nLoad average at the end of the run: "
        f"{load_avg[0]:.1f} / {load_avg[1]:.1f} / {load_avg[2]:.1f} (the machine is shared with other work, "
        "so absolute numbers drift; compare the ratios)."
    )
    write_section(
        "serving",
        "Model server: mlendpoints-serve vs mlflow models serve",
        "make bench  (python -m bench.run_all serving)",
        body,
    )
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
