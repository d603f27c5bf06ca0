"""Prometheus metrics of the model server; multiprocess mode when workers > 1 (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

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

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
