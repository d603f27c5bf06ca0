"""Closed-loop HTTP load for bench/gpu_check.py: N keep-alive connections spread over P processes, each
sending the same POST again as soon as its answer came. Standard library only: the GPU machine has no
wrk and reaches no package index.

    python -m bench.gpu_load URL BODY_FILE [--connections 64] [--seconds 8] [--processes 4] [--rows 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
import urllib.parse
from dataclasses import asdict, dataclass


@dataclass
class LoadResult:
    connections: int
    seconds: float
    requests: int
    errors: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]


async def _connection(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float], statuses: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def _process(args: tuple[str, int, str, bytes, int, float]) -> tuple[list[float], dict[str, int]]:
    host, port, path, body, connections, seconds = args
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(
            *(_connection(host, port, request, deadline, latencies, statuses) for _ in range(connections))
        )

    asyncio.run(main())
    return latencies, statuses


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run(
    url: str, body: bytes, connections: int, seconds: float, processes: int = 4, rows: int = 1
) -> LoadResult:
    """`seconds` of load after a one-second warm-up (not counted)."""
    parsed = urllib.parse.urlsplit(url)
    host, port, path = parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path or "/"
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(_process, [(host, port, path, body, n, 1.0) for n in shares])  # warm-up
        started = time.perf_counter()
        parts = pool.map(_process, [(host, port, path, body, n, seconds) for n in shares])
        elapsed = time.perf_counter() - started
    latencies = sorted(lat for part, _ in parts for lat in part)
    statuses: dict[str, int] = {}
    for _, counts in parts:
        for status, n in counts.items():
            statuses[status] = statuses.get(status, 0) + n
    ok = statuses.get("200", 0)
    return LoadResult(
        connections=connections,
        seconds=round(elapsed, 2),
        requests=len(latencies),
        errors=len(latencies) - ok,
        rps=round(ok / elapsed, 1),
        rows_per_s=round(ok * rows / elapsed, 1),
        p50_ms=round(_percentile(latencies, 0.50) * 1000, 2),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 2),
        statuses=statuses,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body_file")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1)
    a = parser.parse_args()
    with open(a.body_file, "rb") as fh:
        body = fh.read()
    print(json.dumps(asdict(run(a.url, body, a.connections, a.seconds, a.processes, a.rows))))


if __name__ == "__main__":
    main()
