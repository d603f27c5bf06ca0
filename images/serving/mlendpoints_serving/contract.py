"""The one contract between the control plane and the data plane.

Everything the operator (or `mlendpoints local`) hands to a data-plane process
is declared here: ports, labels, environment variable names, and the schema of
the router's config file. It is pure pydantic with no heavy imports, so the
control plane may import this module (and only this module) of
`mlendpoints_serving`. docs/contract.md describes it in prose.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# --- ports -------------------------------------------------------------------
SERVER_PORT = 5001  # mlendpoints-serve inside a deployment pod (Azure's inference server port)
ROUTER_PORT = 8080  # mlendpoints-router inside a router pod; the endpoint Service maps 80 -> 8080

# --- labels put on every child object ----------------------------------------
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlendpoints"
LABEL_ENDPOINT = "mlendpoints.io/endpoint"
LABEL_DEPLOYMENT = "mlendpoints.io/deployment"
LABEL_COMPONENT = "mlendpoints.io/component"  # router | server | batch
LABEL_SERVICE_NAME = "kubernetes.io/service-name"  # set by Kubernetes on EndpointSlices

# --- request headers ---------------------------------------------------------
HEADER_DEPLOYMENT = "x-mlendpoints-deployment"  # pin a request to a deployment
HEADER_DEPLOYMENT_AZURE = "azureml-model-deployment"  # accepted alias, as Azure ML
HEADER_REQUEST_ID = "x-request-id"
HEADER_SERVED_BY = "x-mlendpoints-served-by"  # the deployment that answered
HEADER_REROUTED = "x-mlendpoints-rerouted"  # set when a share was moved off a deployment with no ready pod

# --- environment variables ---------------------------------------------------
ENV_MODEL_DIR = "MLENDPOINTS_MODEL_DIR"  # set for scoring scripts, as AZUREML_MODEL_DIR
ENV_AZUREML_MODEL_DIR = "AZUREML_MODEL_DIR"
ENV_OUTPUT_DIR = "MLENDPOINTS_OUTPUT_DIR"  # batch: where a custom script writes its own files
ENV_TERMINATION_LOG = "MLENDPOINTS_TERMINATION_LOG"  # where a fatal error's one-line reason is written
DEFAULT_TERMINATION_LOG = "/dev/termination-log"

# --- keys --------------------------------------------------------------------
SECRET_PRIMARY_KEY = "primaryKey"
SECRET_SECONDARY_KEY = "secondaryKey"


def keys_secret_name(endpoint: str) -> str:
    return f"{endpoint}-keys"


def router_configmap_name(endpoint: str) -> str:
    return f"{endpoint}-router"


ROUTER_CONFIG_KEY = "router.json"  # key of the router ConfigMap holding RouterConfig as JSON


class DeploymentRoute(BaseModel):
    """Where one deployment's pods are and how to talk to them."""

    model_config = ConfigDict(extra="forbid")

    backends: list[str] = Field(
        default_factory=list, description="Static 'host:port' backends (file mode, local endpoints, tests)."
    )
    service: str | None = Field(
        default=None,
        description="Kubernetes Service whose EndpointSlices list the ready pods (cluster mode).",
    )
    port: int = Field(default=SERVER_PORT, description="Pod port, used with `service`.")
    requestTimeoutMs: int = Field(default=5000, ge=1)
    maxConcurrentRequestsPerInstance: int = Field(default=8, ge=1)


class RouterConfig(BaseModel):
    """The router's config file (file mode) or the `router.json` key of its ConfigMap (cluster mode)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    namespace: str | None = None
    authMode: Literal["key", "none"] = "key"
    keysFile: str | None = Field(
        default=None,
        description="File mode: JSON {primaryKey, secondaryKey}, or a directory holding files of those names.",
    )
    keysSecret: str | None = Field(default=None, description="Cluster mode: Secret watched for the keys.")
    traffic: dict[str, int] = Field(default_factory=dict, description="Live share per deployment; sums to 0 or 100.")
    mirrorTraffic: dict[str, int] = Field(
        default_factory=dict, description="Share of live, unpinned requests copied to a shadow deployment."
    )
    deployments: dict[str, DeploymentRoute] = Field(default_factory=dict)
    maxBodyBytes: int = Field(default=16 * 1024 * 1024, ge=1)
    mirrorMaxInFlight: int = Field(default=64, ge=1)
    accessLog: bool = False
