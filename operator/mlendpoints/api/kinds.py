"""The five kinds: their models and what their CRDs add (names, short names, printer columns)."""

from __future__ import annotations

from dataclasses import dataclass

from mlendpoints.api.batch import BatchDeployment, BatchEndpoint, BatchJob
from mlendpoints.api.common import API_GROUP
from mlendpoints.api.online import OnlineDeployment, OnlineEndpoint, Resource

CATEGORY = "mlendpoints"  # `kubectl get mlendpoints` lists every kind


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class Kind:
    model: type[Resource]
    kind: str
    plural: str
    short_name: str
    columns: tuple[Column, ...]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{API_GROUP}"


def _ready(kind: str) -> Column:
    return Column("Ready", '.status.conditions[?(@.type=="Ready")].status', description=f"The {kind} serves.")


AGE = Column("Age", ".metadata.creationTimestamp", "date")

ONLINE_ENDPOINT = Kind(
    OnlineEndpoint,
    "OnlineEndpoint",
    "onlineendpoints",
    "oe",
    (
        Column("State", ".status.provisioningState", description="Provisioning state."),
        _ready("endpoint"),
        Column("Instances", ".status.instances", description="Ready/desired pods, all deployments."),
        Column("Auth", ".spec.authMode", description="Auth mode."),
        Column("Scoring URI", ".status.scoringUri", priority=1, description="In-cluster scoring URL."),
        AGE,
    ),
)
ONLINE_DEPLOYMENT = Kind(
    OnlineDeployment,
    "OnlineDeployment",
    "onlinedeployments",
    "od",
    (
        Column("Endpoint", ".spec.endpointName", description="Endpoint served."),
        Column("Version", ".status.resolvedModelVersion", description="Model version served."),
        Column("Ready", ".status.readyReplicas", "integer", description="Ready pods."),
        Column("Replicas", ".status.replicas", "integer", description="Pods."),
        Column("Desired", ".status.desiredReplicas", "integer", description="Pods wanted now."),
        Column("Model", ".spec.model", priority=1, description="Model URI."),
        AGE,
    ),
)
BATCH_ENDPOINT = Kind(
    BatchEndpoint,
    "BatchEndpoint",
    "batchendpoints",
    "be",
    (
        Column("Default", ".spec.defaultDeployment", description="Default deployment."),
        _ready("endpoint"),
        AGE,
    ),
)
BATCH_DEPLOYMENT = Kind(
    BatchDeployment,
    "BatchDeployment",
    "batchdeployments",
    "bd",
    (
        Column("Endpoint", ".spec.endpointName", description="Endpoint."),
        Column("Instances", ".spec.resources.instanceCount", "integer", description="Pods per job."),
        Column("Model", ".spec.model", priority=1, description="Model URI."),
        AGE,
    ),
)
BATCH_JOB = Kind(
    BatchJob,
    "BatchJob",
    "batchjobs",
    "bj",
    (
        Column("Endpoint", ".spec.endpointName", description="Endpoint."),
        Column("Phase", ".status.phase", description="Pending, Running, Succeeded or Failed."),
        Column("Progress", ".status.progress", description="Mini-batches finished of all."),
        Column("Succeeded", ".status.items.succeeded", "integer", description="Items scored."),
        Column("Failed", ".status.items.failed", "integer", description="Items failed."),
        Column("Output", ".status.outputUri", priority=1, description="Output URI."),
        AGE,
    ),
)

KINDS: tuple[Kind, ...] = (ONLINE_ENDPOINT, ONLINE_DEPLOYMENT, BATCH_ENDPOINT, BATCH_DEPLOYMENT, BATCH_JOB)
