"""Prometheus metrics per deployment, in a registry of the router's own (served on GET /metrics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from mlendpoints_serving.router.state import Deployment

# Requests rejected before a deployment was chosen (auth, unknown pin, nothing ready) carry this label.
NO_DEPLOYMENT = "none"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RouterMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        prefix = "mlendpoints_router_"
        self.requests = Counter(
            prefix + "requests",
            "Live requests answered, by deployment and status code.",
            ["deployment", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            prefix + "request_duration_seconds",
            "Time from the full request to the response, per deployment.",
            ["deployment"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            prefix + "in_flight_requests",
            "Live requests in flight, per deployment.",
            ["deployment"],
            registry=self.registry,
        )
        self.queued = Gauge(
            prefix + "queued_requests",
            "Requests held for a free pod (maxQueueWaitMs), per deployment.",
            ["deployment"],
            registry=self.registry,
        )
        self.retries = Counter(
            prefix + "upstream_retries",
            "Requests sent again to another pod after a refused or reset connection.",
            ["deployment"],
            registry=self.registry,
        )
        self.mirror = Counter(
            prefix + "mirror_requests",
            "Mirror copies: sent, dropped (over the bound or no ready pod), failed.",
            ["deployment", "outcome"],
            registry=self.registry,
        )
        self.rerouted = Counter(
            prefix + "rerouted_requests",
            "Live requests moved off a deployment that had no ready pod.",
            ["deployment", "to"],
            registry=self.registry,
        )
        self.ready_pods = Gauge(
            prefix + "ready_pods",
            "Pods the router can send to, per deployment.",
            ["deployment"],
            registry=self.registry,
        )
        # Data collection (router/collector.py).
        self.collector_written = Counter(
            prefix + "collector_records_written",
            "Collected records written to the destination, per deployment.",
            ["deployment"],
            registry=self.registry,
        )
        self.collector_files = Counter(
            prefix + "collector_files_written",
            "Collected files written, per deployment.",
            ["deployment"],
            registry=self.registry,
        )
        self.collector_dropped = Counter(
            prefix + "collector_dropped",
            "Collected records dropped: queue_full (requests are never slowed) or write_failed.",
            ["deployment", "reason"],
            registry=self.registry,
        )
        self.collector_healthy = Gauge(
            prefix + "collector_destination_healthy",
            "1 when the last write to the deployment's destination succeeded, 0 when it failed.",
            ["deployment"],
            registry=self.registry,
        )
        # Shadow comparison of mirrored requests (contract.compare_answers), no storage needed.
        pair = ["live", "mirror"]
        self.shadow_compared = Counter(
            prefix + "shadow_compared", "Mirrored requests whose two answers were compared.", pair,
            registry=self.registry,
        )  # fmt: skip
        self.shadow_agreed = Counter(
            prefix + "shadow_agreed",
            "Compared requests whose answers agree (both 2xx, labels equal, numbers within 1e-9).",
            pair,
            registry=self.registry,
        )
        self.shadow_status_match = Counter(
            prefix + "shadow_status_match", "Compared requests with the same status code.", pair,
            registry=self.registry,
        )  # fmt: skip
        self.shadow_labels = Counter(
            prefix + "shadow_labels", "Label values compared (strings, integers, booleans).", pair,
            registry=self.registry,
        )  # fmt: skip
        self.shadow_labels_equal = Counter(
            prefix + "shadow_labels_equal", "Label values equal in both answers.", pair,
            registry=self.registry,
        )  # fmt: skip
        self.shadow_abs_diff = Histogram(
            prefix + "shadow_abs_diff",
            "Mean absolute difference of the numbers of one compared request (sum/count: the mean).",
            pair,
            buckets=(1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0),
            registry=self.registry,
        )
        self.shadow_abs_diff_max = Gauge(
            prefix + "shadow_abs_diff_max", "Largest absolute difference of a number seen.", pair,
            registry=self.registry,
        )  # fmt: skip
        self.shadow_latency = Histogram(
            prefix + "shadow_duration_seconds",
            "Latency of the compared requests, per deployment and role (live or mirror).",
            ["deployment", "role"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            prefix + "shadow_dropped", "Mirrored pairs not compared: the comparison queue was full.", pair,
            registry=self.registry,
        )  # fmt: skip
        # labels() costs a dict lookup and a lock; the hot path keeps the children.
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe(self, deployment: str, status: int, seconds: float) -> None:
        key = (deployment, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(deployment, str(status))
        counter.inc()
        histogram = self._latency_children.get(deployment)
        if histogram is None:
            histogram = self._latency_children[deployment] = self.latency.labels(deployment)
        histogram.observe(seconds)

    def sync_gauges(self, deployments: Iterable[Deployment], now: float) -> None:
        """In-flight, queued and ready-pod gauges are read from the routing state when scraped."""
        self.in_flight.clear()
        self.queued.clear()
        self.ready_pods.clear()
        for deployment in deployments:
            self.in_flight.labels(deployment.name).set(deployment.in_flight)
            self.queued.labels(deployment.name).set(len(deployment.queue))
            self.ready_pods.labels(deployment.name).set(len(deployment.ready_pods(now)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
