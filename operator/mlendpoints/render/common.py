"""What every rendered child shares: names, labels, owner references, the config hash, render settings."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from kubernetes.utils.quantity import parse_quantity
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
# A GCS service-account key is a file (gcsfs reads GOOGLE_APPLICATION_CREDENTIALS), so it is mounted.
GCS_CREDENTIALS_VOLUME = "gcs-credentials"
GCS_CREDENTIALS_DIR = "/var/run/secrets/mlendpoints/gcs"
GCS_CREDENTIALS_KEY = "key.json"


class RenderSettings(BaseModel):
    """The operator settings that shape children (see mlendpoints.operator.settings)."""

    model_config = ConfigDict(frozen=True)

    serving_image: str
    serving_image_gpu: str
    image_pull_policy: str = "IfNotPresent"
    mlflow_tracking_uri: str | None = None
    mlflow_credentials_secret: str | None = None  # Secret (in the resource's namespace) of MLFLOW_* variables
    # Object stores, each a Secret in the resource's namespace (optional: pods start without it).
    s3_credentials_secret: str | None = None  # AWS_* variables (keys, region, AWS_ENDPOINT_URL)
    azure_credentials_secret: str | None = None  # AZURE_STORAGE_* / AZURE_CLIENT_* variables
    gcs_credentials_secret: str | None = None  # a service-account key under GCS_CREDENTIALS_KEY
    image_pull_secrets: tuple[str, ...] = ()  # for the serving image, on every pod the operator renders
    # A NetworkPolicy per OnlineDeployment: its model servers take traffic from their endpoint's
    # routers only, and metrics scrapes from these peers (NetworkPolicy `from` entries).
    network_policies: bool = False
    # Graceful drain: a terminating pod keeps serving this long (preStop sleep) while its removal
    # from the EndpointSlices reaches kube-proxy and the routers, then stops taking connections and
    # finishes what is in flight (the server and the router do on SIGTERM).
    prestop_seconds: int = 5
    # Requests and limits a container gets for what its resource's spec leaves unset (the operator's
    # settings fill them; empty here: local mode runs processes).
    default_resources: Object = {}  # model servers and batch instances
    router_default_resources: Object = {}
    metrics_from: tuple[Object, ...] = ()
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


class Credentials(BaseModel):
    """What a container that reaches MLflow or an object store carries: env, envFrom and a key file."""

    env: list[Object]
    env_from: list[Object]
    volumes: list[Object]  # for the pod
    mounts: list[Object]  # for each container that fetches or reads/writes the stores


def credentials(settings: RenderSettings) -> Credentials:
    """MLflow's tracking URI and credentials, and the object stores' credentials, from operator-wide
    defaults. Every Secret is optional: a pod whose model needs none of them starts without them."""
    env: list[Object] = []
    if settings.mlflow_tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": settings.mlflow_tracking_uri})
    env_from = [
        {"secretRef": {"name": secret, "optional": True}}
        for secret in (
            settings.mlflow_credentials_secret,
            settings.s3_credentials_secret,
            settings.azure_credentials_secret,
        )
        if secret
    ]
    volumes: list[Object] = []
    mounts: list[Object] = []
    if settings.gcs_credentials_secret:
        env.append(
            {
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_KEY}",
            }
        )
        volumes.append(
            {
                "name": GCS_CREDENTIALS_VOLUME,
                "secret": {"secretName": settings.gcs_credentials_secret, "optional": True},
            }
        )
        mounts.append({"name": GCS_CREDENTIALS_VOLUME, "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True})
    return Credentials(env=env, env_from=env_from, volumes=volumes, mounts=mounts)


def image_pull_secrets(settings: RenderSettings) -> list[Object]:
    return [{"name": name} for name in settings.image_pull_secrets]


DRAIN_MARGIN_S = 5  # past the preStop sleep and the longest request: process exit, flushes


def prestop(settings: RenderSettings) -> Object:
    """The preStop hook: the kubelet's own sleep (no binary in the image; beta on by default 1.30+)."""
    return {"preStop": {"sleep": {"seconds": settings.prestop_seconds}}}


def grace_period(settings: RenderSettings, longest_request_ms: int, flush_s: int = 0) -> int:
    """terminationGracePeriodSeconds: the preStop sleep, the longest request, then `flush_s` and a margin."""
    return settings.prestop_seconds + -(-longest_request_ms // 1000) + flush_s + DRAIN_MARGIN_S


def with_default_resources(resources: Object, defaults: Object) -> Object:
    """`resources` with each request and limit it leaves unset taken from `defaults`. Where a default
    and a user's value conflict (a request above the limit), the user's value decides: a user's limit
    lowers a default request to it, a user's request raises a default limit to it."""
    user_requests, user_limits = dict(resources.get("requests") or {}), dict(resources.get("limits") or {})
    requests = {**(defaults.get("requests") or {}), **user_requests}
    limits = {**(defaults.get("limits") or {}), **user_limits}
    for name in set(requests) & set(limits):
        if parse_quantity(requests[name]) > parse_quantity(limits[name]):
            if name in user_limits and name not in user_requests:
                requests[name] = limits[name]
            else:
                limits[name] = requests[name]
    out = dict(resources)
    if requests or "requests" in resources:
        out["requests"] = requests
    if limits or "limits" in resources:
        out["limits"] = limits
    return out
