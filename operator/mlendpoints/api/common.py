"""Types shared by every resource: Kubernetes-native pod settings, conditions, code configuration.

The Kubernetes types mirror the core/v1 shapes (EnvVar, ResourceRequirements,
Toleration, Affinity) so users can paste what they already write in pod specs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlendpoints_serving import contract

API_GROUP = "mlendpoints.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

# A DNS-1123 label: names of endpoints and deployments become names of Services.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 50  # leaves room for the "-router"/"-keys" suffixes within the 63-character label limit

# Quantities ("500m", "2Gi", 1) are integers or strings, as in core/v1.
Quantity = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}, description="A Kubernetes quantity."),
]


class ApiModel(BaseModel):
    """Base of every API model: camelCase field names as in the CRD, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FreeForm(BaseModel):
    """An object passed through to Kubernetes unchanged."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


def nested(model: type[BaseModel], description: str) -> Any:
    """A sub-object that always exists, so the API server applies its fields' defaults."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


class EnvVarSource(FreeForm):
    """core/v1 EnvVarSource: secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef."""


class EnvVar(ApiModel):
    """core/v1 EnvVar."""

    name: str = Field(description="Environment variable name.", min_length=1)
    value: str | None = Field(default=None, description="Literal value.")
    valueFrom: EnvVarSource | None = Field(
        default=None, description="Source of the value (core/v1 EnvVarSource)."
    )


class ResourceRequirements(ApiModel):
    """core/v1 ResourceRequirements (e.g. cpu, memory, nvidia.com/gpu)."""

    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum resources per container.")
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Minimum resources per container."
    )


class Toleration(ApiModel):
    """core/v1 Toleration."""

    key: str | None = Field(
        default=None, description="Taint key; empty matches all keys with operator Exists."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default)."
    )
    value: str | None = Field(default=None, description="Taint value matched with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    tolerationSeconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction."
    )


class Affinity(FreeForm):
    """core/v1 Affinity: nodeAffinity, podAffinity, podAntiAffinity."""


class CodeConfiguration(ApiModel):
    """A custom scoring script, shipped in a ConfigMap (Azure's code_configuration)."""

    configMap: str = Field(description="ConfigMap in the same namespace holding the script and its helpers.")
    scoringScript: str = Field(
        description="File name of the scoring script within the ConfigMap (defines init() and run()).",
        min_length=1,
    )
    modelFolder: str | None = Field(
        default=None,
        max_length=253,
        pattern=contract.MODEL_FOLDER_PATTERN,
        description="Azure ML's layout: the script finds the model's files at "
        "AZUREML_MODEL_DIR/<modelFolder>, as Azure puts a model registered from a folder of that name "
        "(`mlendpoints import azureml` sets it). "
        "Unset: at AZUREML_MODEL_DIR itself.",
    )


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    # Optional rather than "": Kubernetes 1.20 stores an empty string in a custom resource as null.
    reason: str | None = Field(default=None, description="One-word CamelCase reason.")
    message: str | None = Field(default=None, description="Human-readable detail.")
    lastTransitionTime: str | None = Field(
        default=None,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observedGeneration: int | None = Field(
        default=None, description="Generation the condition was computed for."
    )
