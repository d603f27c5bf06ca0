"""The operator's own renderers, called for a local endpoint.

Nothing here builds a pod: the pods are what `mlendpoints.render` renders for
the cluster. What differs locally is decided in three places only:

- the render inputs: namespace `local`, no tracking URI (the processes inherit
  this shell's `MLFLOW_TRACKING_URI`), and model URIs pinned by the operator's
  own resolver; a plain path becomes a `file://` URI (a path on this machine);
- the router runs in file mode: its container keeps its command, and its
  arguments become `--config FILE --port <its container port>`, because there
  is no API server to watch. The file is the rendered ConfigMap's RouterConfig
  with the local backends and keys file filled in;
- `mlendpoints.local.mapping` maps volumes and ports (documented there).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mlendpoints.api.online import OnlineDeployment
from mlendpoints.errors import UserError
from mlendpoints.local.manifests import LocalEndpoint
from mlendpoints.operator.models import ResolveError, resolve
from mlendpoints.render.common import RenderSettings
from mlendpoints.render.deployment import ResolvedModel, render_deployment
from mlendpoints.render.discovery import MODERN
from mlendpoints.render.endpoint import effective_routing, render_endpoint, router_config
from mlendpoints_serving.contract import ROUTER_CONFIG_KEY, ROUTER_PORT, RouterConfig

LOCAL_IMAGE = "local"  # images are not used locally: containers run from this Python environment
SETTINGS = RenderSettings(serving_image=LOCAL_IMAGE, serving_image_gpu=LOCAL_IMAGE)


@dataclass(frozen=True)
class RenderedDeployment:
    pod_spec: dict[str, Any]
    model_uri: str
    model_version: str | None
    spec_hash: str  # of the pod template, as a ReplicaSet's pod-template-hash


@dataclass(frozen=True)
class RenderedRouter:
    config: RouterConfig
    pod_spec: dict[str, Any]


def resolve_model(uri: str) -> ResolvedModel:
    """Pin `models:/name@alias` and `models:/name/latest` to a version with the operator's resolver.

    A plain path names a directory on this machine, so it becomes a `file://` URI: in a pod a
    path is inside the pod, and the mount mapping would rewrite it like one.
    """
    if uri.startswith("/"):
        return ResolvedModel(Path(uri).as_uri())
    try:
        return asyncio.run(resolve(uri, None))  # None: this shell's MLFLOW_TRACKING_URI
    except ResolveError as exc:
        raise UserError(
            f"cannot resolve {exc}",
            "set MLFLOW_TRACKING_URI (and credentials) to the registry that holds the model",
        ) from exc


def _metadata(resource: Any, namespace: str) -> dict[str, Any]:
    return {**resource.metadata, "namespace": namespace, "uid": f"local-{resource.metadata['name']}"}


def render_local_deployment(
    spec: LocalEndpoint, deployment: OnlineDeployment, namespace: str
) -> RenderedDeployment:
    model = resolve_model(deployment.spec.model)
    local = deployment.model_copy(update={"metadata": _metadata(deployment, namespace)})
    children = render_deployment(local, model, MODERN, SETTINGS)
    workload = next(c for c in children if c["kind"] == "Deployment")
    pod_spec = workload["spec"]["template"]["spec"]
    spec_hash = hashlib.sha256(orjson.dumps(workload["spec"]["template"], option=orjson.OPT_SORT_KEYS))
    return RenderedDeployment(pod_spec, model.uri, model.version, spec_hash.hexdigest()[:10])


def render_router(spec: LocalEndpoint, namespace: str) -> RenderedRouter:
    endpoint = spec.endpoint.model_copy(update={"metadata": _metadata(spec.endpoint, namespace)})
    deployments = {name: d.spec for name, d in spec.deployments.items()}
    routing = effective_routing(endpoint.spec, deployments, None)
    config = router_config(spec.name, namespace, endpoint.spec, deployments, routing)
    children = render_endpoint(endpoint, config, MODERN, SETTINGS)
    config_map = next(c for c in children if c["kind"] == "ConfigMap")
    workload = next(c for c in children if c["kind"] == "Deployment")
    return RenderedRouter(
        RouterConfig.model_validate_json(config_map["data"][ROUTER_CONFIG_KEY]),
        workload["spec"]["template"]["spec"],
    )


def file_mode(router_pod_spec: dict[str, Any], config_file: Path) -> dict[str, Any]:
    """The router pod with its container switched to file mode (see the module docstring)."""
    containers = []
    for container in router_pod_spec["containers"]:
        port = next((p["containerPort"] for p in container.get("ports") or []), ROUTER_PORT)
        containers.append({**container, "args": ["--config", str(config_file), "--port", str(port)]})
    return {**router_pod_spec, "containers": containers}


def model_volume(pod_spec: dict[str, Any], mount_path: str) -> str | None:
    """The volume mounted at the deployment's modelMountPath: it becomes the model cache."""
    for container in pod_spec.get("containers") or []:
        for mount in container.get("volumeMounts") or []:
            if mount["mountPath"].rstrip("/") == mount_path.rstrip("/"):
                return str(mount["name"])
    return None
