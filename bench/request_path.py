"""The Python cost of one request, in-process: `ServerApp.handle` on each scoring route, no sockets.

bench/serving.py measures the whole server over loopback, where the kernel's TCP work is a
large share of each request and runs on these shared machines differ by a few percent: too
coarse to see a change of 1 us. This drives `ServerApp.handle` itself, as the HTTP/1.1
protocol does (a new asyncio Task per request, 32 in flight, uvloop), with the diabetes
Ridge model, batching on (the defaults), the process pinned to one core (the inference
thread too). Per route, microseconds per request, best of ROUNDS:

- the whole request (routing, the deadline, decoding, the batcher and the inference thread,
  predict, encoding, metrics);
- the same request with the route's handler answering a fixed body at once: what the app
  costs around the protocol's codec and the data plane;
- the floor: a Task per request running a coroutine that returns at once.

On a quiet machine runs agree within ~1%; the figures are the request path's Python work,
which bench/serving.py's throughput figures add the kernel's and the HTTP parser's to.

    python -m bench.request_path [REQUESTS_PER_CONNECTION]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench import report
from bench.serving import SERVER_CPU, V2, body
from examples.models import save_diabetes_regressor
from mlendpoints_serving.server.app import Request, Response, ServerApp
from mlendpoints_serving.server.metrics import Metrics
from mlendpoints_serving.server.settings import ServeSettings

CONNECTIONS = 32
ROUNDS = 5
ROUTES = ("/score", "/invocations", V2)


def scope(route: str, size: int) -> dict[str, Any]:
    """What server/http1.py makes of the request bench/serving.py's wrk sends."""
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": route,
        "raw_path": route.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(size).encode())],
        "scheme": "http",
        "server": ("127.0.0.1", 5000),
        "client": ("127.0.0.1", 40000),
    }


async def per_request_us(call: Callable[[], Awaitable[object]], per_connection: int) -> float:
    """Best of ROUNDS: CONNECTIONS clients, each awaiting a new Task per request, in turn."""
    loop = asyncio.get_running_loop()

    async def connection() -> None:
        for _ in range(per_connection):
            await loop.create_task(call())  # type: ignore[arg-type]

    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
        best = min(best, (time.perf_counter() - started) / (CONNECTIONS * per_connection))
    return best * 1e6


async def measure(model_dir: Path, per_connection: int) -> tuple[float, dict[str, tuple[float, float]]]:
    """(the floor, per route (the whole request, the request around a fixed-answer handler)), in us."""
    app = ServerApp(ServeSettings(model_dir=model_dir, workers=1), Metrics(), on_load_failed=print)  # type: ignore[call-arg]
    await app.dataplane.load()
    assert app.dataplane.batching, "the diabetes Ridge is batched by default"
    results: dict[str, tuple[float, float]] = {}
    try:

        async def nothing() -> None:
            return None

        floor = await per_request_us(nothing, per_connection)
        for route in ROUTES:
            payload = orjson.dumps(body(route, 1))
            request_scope = scope(route, len(payload))
            status, _, answer = await app.handle(request_scope, payload)
            assert status == 200, answer
            whole = await per_request_us(lambda: app.handle(request_scope, payload), per_connection)  # noqa: B023
            handler = app.routes[("POST", route)]

            async def fixed(request: Request, answer: bytes = answer) -> Response:
                return 200, b"application/json", answer, ()

            app.routes[("POST", route)] = fixed
            around = await per_request_us(lambda: app.handle(request_scope, payload), per_connection)  # noqa: B023
            app.routes[("POST", route)] = handler
            results[route] = (whole, around)
    finally:
        app.dataplane.close()
    return floor, results


def main() -> int:
    per_connection = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    cpu = int(SERVER_CPU)
    if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})  # before the inference thread starts: it shares the core
    load_before = os.getloadavg()
    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_diabetes_regressor(Path(tmp) / "diabetes")
        floor, results = uvloop.run(measure(model_dir, per_connection))
    load_after = os.getloadavg()
    rows = []
    for route, (whole, around) in results.items():
        rows.append([route, f"{whole:.2f}", f"{around:.2f}", f"{whole - around:.2f}"])
        print(f"{route:28s} whole {whole:6.2f} us  fixed answer {around:6.2f} us", flush=True)
    print(f"floor (a Task per request) {floor:.2f} us")
    v2_over = results[V2][0] / results["/invocations"][0]
    text = "\n\n".join(
        [
            report.table(
                [
                    "route (1 row, 32 in flight)",
                    "whole request, us",
                    "handler answering a fixed body, us",
                    "codec + data plane, us",
                ],
                rows,
            ),
            f"Floor, a Task per request that returns at once: {floor:.2f} us. V2 `infer` costs "
            f"{v2_over:.2f}x `/invocations` per request here.",
            "`ServerApp.handle` driven in-process as server/http1.py drives it (a Task per request, 32 in "
            f"flight, uvloop, the process and its inference thread pinned to CPU {SERVER_CPU}), the diabetes "
            f"Ridge with the defaults (batching on), best of {ROUNDS} rounds of {CONNECTIONS} x "
            f"{per_connection} requests. No sockets: the Python work of the request path, which the "
            "throughput figures of bench/serving.py add the kernel's TCP work and the HTTP parser to.",
            f"Load average (1 / 5 / 15 min) at the start: {' / '.join(f'{x:.2f}' for x in load_before)}; "
            f"at the end: {' / '.join(f'{x:.2f}' for x in load_after)}.",
        ]
    )
    report.write_section(
        "request_path",
        "Model server: the Python cost of one request, in-process",
        "flock -o /tmp/mlendpoints-bench.lock python -m bench.request_path",
        text,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
