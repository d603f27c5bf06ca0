"""What one Azure file's import builds up: the resource, the objects beside it, and the findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from mlendpoints.errors import UserError


class AzureKind(StrEnum):
    """Azure ML CLI v2 YAML kinds, named as their `$schema` files are."""

    MANAGED_ONLINE_ENDPOINT = "managedOnlineEndpoint"
    KUBERNETES_ONLINE_ENDPOINT = "kubernetesOnlineEndpoint"
    MANAGED_ONLINE_DEPLOYMENT = "managedOnlineDeployment"
    KUBERNETES_ONLINE_DEPLOYMENT = "kubernetesOnlineDeployment"
    BATCH_ENDPOINT = "batchEndpoint"
    MODEL_BATCH_DEPLOYMENT = "modelBatchDeployment"
    COMMAND_JOB = "commandJob"


ONLINE_ENDPOINTS = frozenset({AzureKind.MANAGED_ONLINE_ENDPOINT, AzureKind.KUBERNETES_ONLINE_ENDPOINT})
ONLINE_DEPLOYMENTS = frozenset({AzureKind.MANAGED_ONLINE_DEPLOYMENT, AzureKind.KUBERNETES_ONLINE_DEPLOYMENT})
ENDPOINTS = ONLINE_ENDPOINTS | {AzureKind.BATCH_ENDPOINT}
DEPLOYMENTS = ONLINE_DEPLOYMENTS | {AzureKind.MODEL_BATCH_DEPLOYMENT}
JOBS = frozenset({AzureKind.COMMAND_JOB})
ALL_KINDS = ENDPOINTS | DEPLOYMENTS | JOBS

# What each Azure kind becomes.
TARGET_KIND = {
    AzureKind.MANAGED_ONLINE_ENDPOINT: "OnlineEndpoint",
    AzureKind.KUBERNETES_ONLINE_ENDPOINT: "OnlineEndpoint",
    AzureKind.MANAGED_ONLINE_DEPLOYMENT: "OnlineDeployment",
    AzureKind.KUBERNETES_ONLINE_DEPLOYMENT: "OnlineDeployment",
    AzureKind.BATCH_ENDPOINT: "BatchEndpoint",
    AzureKind.MODEL_BATCH_DEPLOYMENT: "BatchDeployment",
    AzureKind.COMMAND_JOB: "Job",
}


class ImportRefused(UserError):
    """An Azure file that cannot be imported as it is; the message names the file and the field."""


@dataclass(frozen=True)
class Finding:
    """An Azure field that was not carried over as it is, and what to do instead."""

    source: Path
    field: str
    message: str

    def line(self) -> str:
        return f"{self.source}: {self.field}: {self.message}"


@dataclass(frozen=True)
class ImportOptions:
    """What the import needs that Azure's files leave to the workspace."""

    # Where a data_collector's records go: Azure writes them to the workspace's blob store.
    collect_to: str | None = None
    # A command job's image when its environment is not one (an Azure environment, conda, a build).
    job_image: str | None = None
    # Check each file with azure-ai-ml's own loaders first (azure_check.py): Azure's words for its refusals.
    azure_check: bool = False
    # Where a local model folder is copied (s3://, gs://, abfss://), so that pods on a cluster can fetch it.
    upload_to: str | None = None


@dataclass
class Context:
    """One Azure document being imported."""

    source: Path
    kind: AzureKind
    name: str
    options: ImportOptions = field(default_factory=ImportOptions)
    spec: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)  # ConfigMaps the resource refers to
    findings: list[Finding] = field(default_factory=list)
    # The folder name a model path ends in: Azure gives a scoring script AZUREML_MODEL_DIR/<it>.
    model_folder: str | None = None

    def set(self, path: str, value: Any) -> None:
        """Set `spec` field `path` (dotted, camelCase as in the CRD)."""
        *parents, last = path.split(".")
        node = self.spec
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    def warn(self, azure_field: str, message: str) -> None:
        self.findings.append(Finding(self.source, azure_field, message))

    def refuse(self, azure_field: str, message: str, hint: str) -> ImportRefused:
        return ImportRefused(f"{self.source}: {azure_field}: {message}", hint)

    def local_path(self, value: str) -> Path:
        """A path in the file, as Azure reads it: relative to the file's folder."""
        return (self.source.parent / value).resolve()
