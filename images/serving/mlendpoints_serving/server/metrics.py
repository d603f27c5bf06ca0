"""Prometheus metrics of the model server; multiprocess mode when workers > 1 (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import asyncio
import bisect
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.requests = Counter(
            "mlendpoints_requests",
            "Requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlendpoints_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mlendpoints_requests_in_flight",
            "Requests being handled",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "mlendpoints_batch_rows", "Rows per predict() call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        # 1 per worker, labelled with where its model runs (a GPU's name, or cpu): the --device choice.
        self.model_device = Gauge(
            "mlendpoints_model_device",
            "Where the worker's model runs: device (cpu, cuda:N) and its name",
            ["device", "device_name"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.model_load_seconds = Gauge(
            "mlendpoints_model_load_seconds",
            "Seconds to load the model",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.stats = RequestStats(self)

    def render(self) -> bytes:
        self.stats.flush()
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class RequestStats:
    """The request path's metrics (requests, latency, in flight) in plain Python numbers, added to the
    Prometheus metrics a second after the first unflushed request and before each scrape.

    Each prometheus_client update takes a lock (with several workers, an mmap write too): the four a
    request made cost 3-9 us, more than parsing a small request. Here a request costs two dict
    updates and a bisect. The in-flight gauge is the count at the last flush.
    """

    def __init__(self, metrics: Metrics, period_s: float = 1.0) -> None:
        self._metrics = metrics
        self._period_s = period_s
        self._bounds = LATENCY_BUCKETS  # sorted: bucket i holds bounds[i-1] < seconds <= bounds[i]
        self._counts: dict[tuple[str, int], int] = {}
        # Per route: a count per bucket (the last one +Inf), then the sum of the seconds.
        self._latency: dict[str, list[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.in_flight = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = [0.0] * (len(self._bounds) + 2)
        latency[bisect.bisect_left(self._bounds, seconds)] += 1
        latency[-1] += seconds
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._period_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        metrics = self._metrics
        for (route, status), count in self._counts.items():
            metrics.requests.labels(route, str(status)).inc(count)
        self._counts.clear()
        for route, latency in self._latency.items():
            histogram = metrics.latency.labels(route)
            # prometheus_client has no bulk observe: its per-bucket values, as observe() adds to them
            # (tests/unit/serving/test_metrics.py holds this to observe()'s exposition).
            for index, observed in enumerate(latency[:-1]):
                if observed:
                    histogram._buckets[index].inc(observed)  # type: ignore[attr-defined]
            histogram._sum.inc(latency[-1])  # type: ignore[attr-defined]
        self._latency.clear()
        metrics.in_flight.set(self.in_flight)
