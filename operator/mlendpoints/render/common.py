"""What every rendered child shares: names, labels, owner references, the config hash, render settings."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from mlendpoints.api.common import GROUP_VERSION
from mlendpoints_serving import contract

Object = dict[str, Any]

# Set on every child: a hash of what was rendered. A changed hash means fields may have been
# dropped from the desired state, which only a fresh server-side apply removes.
CONFIG_HASH_ANNOTATION = "mlendpoints.io/config-hash"
MODEL_VERSION_ANNOTATION = "mlendpoints.io/model-version"
MODEL_URI_ANNOTATION = "mlendpoints.io/model-uri"

GPU_RESOURCE = "nvidia.com/gpu"
CODE_DIR = "/var/mlendpoints/code"  # where a scoring script's ConfigMap is mounted (online and batch)
TMP_DIR = "/tmp"  # an emptyDir: the root filesystem is read-only


class RenderSettings(BaseModel):
    """The operator settings that shape children (see mlendpoints.operator.settings)."""

    model_config = ConfigDict(frozen=True)

    serving_image: str
    serving_image_gpu: str
    image_pull_policy: str = "IfNotPresent"
    mlflow_tracking_uri: str | None = None
    mlflow_credentials_secret: str | None = None  # Secret (in the resource's namespace) of MLFLOW_* variables
    run_as_user: int = 1000


def server_name(deployment: str) -> str:
    """Name of an OnlineDeployment's Deployment, Service, PDB and HPA."""
    return f"{deployment}-server"


def router_name(endpoint: str) -> str:
    """Name of an endpoint's router Deployment, ServiceAccount, Role, RoleBinding and PDB."""
    return f"{endpoint}-router"


def labels(endpoint: str, component: str, deployment: str | None = None) -> dict[str, str]:
    out = {
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_ENDPOINT: endpoint,
        contract.LABEL_COMPONENT: component,
    }
    if deployment is not None:
        out[contract.LABEL_DEPLOYMENT] = deployment
    return out


def owner_reference(kind: str, name: str, uid: str) -> Object:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def config_hash(obj: Object) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def child(
    api_version: str,
    kind: str,
    name: str,
    namespace: str,
    owner: Object,
    obj_labels: dict[str, str],
    body: Object,
) -> Object:
    """A complete child object, its config hash computed over everything else in it."""
    obj: Object = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": obj_labels, "ownerReferences": [owner]},
        **body,
    }
    obj["metadata"]["annotations"] = {CONFIG_HASH_ANNOTATION: config_hash(obj)}
    return obj


def drop_none(value: Any) -> Any:
    """Kubernetes reads a null field as a request to clear it; leave unset fields out instead."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def dump(model: BaseModel | None) -> Any:
    return None if model is None else drop_none(model.model_dump(exclude_none=True))


def pod_security_context(settings: RenderSettings) -> Object:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "fsGroup": settings.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


CONTAINER_SECURITY_CONTEXT: Object = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
