"""The request path's metrics, kept in plain numbers and flushed into prometheus_client's."""

from __future__ import annotations

import asyncio

import pytest

from mlendpoints_serving.server.metrics import LATENCY_BUCKETS, Metrics, RequestStats

# Bucket edges exactly, between them, below the first, above the last (+Inf).
SECONDS = [*LATENCY_BUCKETS, 0.0001, 0.0007, 0.003, 0.3, 7.0, 99.0, 0.0]
OBSERVED = [
    (route, status, s) for s in SECONDS for route, status in (("/score", 200), ("/v2", 400), ("other", 404))
]


def exposition(metrics: Metrics) -> list[str]:
    return sorted(
        line
        for line in metrics.render().decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    )


def test_flushed_stats_expose_what_prometheus_observe_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    direct, buffered = Metrics(), Metrics()
    for route, status, seconds in OBSERVED:
        direct.requests.labels(route, str(status)).inc()
        direct.latency.labels(route).observe(seconds)
    direct.stats.in_flight = 3  # the gauge is the stats' count at each flush

    async def requests() -> None:
        for route, status, seconds in OBSERVED:
            buffered.stats.observe(route, status, seconds)
        buffered.stats.in_flight = 3

    asyncio.run(requests())
    assert exposition(buffered) == exposition(direct)  # render() flushes first
    assert any(
        line.startswith('mlendpoints_request_seconds_bucket{le="+Inf",route="/score"}')
        for line in exposition(direct)
    )


def test_stats_are_flushed_a_period_after_the_first_request_without_a_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()
    stats = RequestStats(metrics, period_s=0.05)

    def total() -> float:
        return metrics.requests.labels("/score", "200")._value.get()  # type: ignore[attr-defined,no-any-return]

    async def requests() -> tuple[float, float]:
        stats.observe("/score", 200, 0.001)
        stats.observe("/score", 200, 0.002)
        before = total()
        await asyncio.sleep(0.2)
        return before, total()

    before, after = asyncio.run(requests())
    assert (before, after) == (0, 2)
