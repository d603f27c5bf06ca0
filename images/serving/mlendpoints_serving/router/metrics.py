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
        """In-flight and ready-pod gauges are read from the routing state when scraped, not per request."""
        self.in_flight.clear()
        self.ready_pods.clear()
        for deployment in deployments:
            self.in_flight.labels(deployment.name).set(deployment.in_flight)
            self.ready_pods.labels(deployment.name).set(len(deployment.ready_pods(now)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
