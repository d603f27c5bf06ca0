"""Prometheus metrics of the operator: reconciles, errors and durations by kind; API writes."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("mlendpoints_operator_reconciles", "Reconciles run.", ["kind"])
ERRORS = Counter("mlendpoints_operator_reconcile_errors", "Reconciles that failed (retried later).", ["kind"])
DURATION = Histogram(
    "mlendpoints_operator_reconcile_seconds",
    "Time per reconcile.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter(
    "mlendpoints_operator_api_writes",
    "Write requests sent to the API server.",
    ["verb", "resource"],  # resource: plural[/subresource], e.g. onlineendpoints/status
)
