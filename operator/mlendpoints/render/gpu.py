"""What a pod that asks for NVIDIA GPUs gets, for online and batch deployments alike.

A deployment asks for GPUs with `nvidia.com/gpu` in its resources (limits or requests). Its pods get:

- the CUDA serving image (`serving_image_gpu`, chosen by the callers);
- `nvidia.com/gpu` as a limit (Kubernetes schedules extended resources by limit; a request alone is
  refused), with the request, when given, equal to it;
- the toleration `nvidia.com/gpu:NoSchedule` (Exists), the taint GPU node pools carry (AKS, GKE, EKS
  and the NVIDIA GPU operator's convention), unless a toleration of the spec already covers it;
- `NVIDIA_DRIVER_CAPABILITIES=compute,utility`: which driver libraries the NVIDIA container toolkit
  mounts (CUDA and nvidia-smi); the CUDA image sets it too, this covers a custom image that does not.
  `NVIDIA_VISIBLE_DEVICES` is never set: the device plugin sets it to the GPUs it allocated to the
  container, and a value in the pod spec could expose GPUs the pod was not given;
- init containers (the model fetch) without the GPU: they do not need one, and do not hold one.

The model server runs one worker per GPU unless `workers` says otherwise (worker i takes GPU i), and
batches concurrent requests by default (`GPU_DEFAULT_MAX_BATCH_SIZE` rows): a GPU's throughput comes
from batches.
"""

from __future__ import annotations

from typing import Any, Protocol

from mlendpoints.api.common import Toleration
from mlendpoints.render.common import GPU_RESOURCE, Object, dump

GPU_TOLERATION: Object = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
DRIVER_CAPABILITIES = {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}
# Rows per predict() on a GPU deployment without `batching` (maxBatchTimeMs: the API's default).
# docs/contract.md ("GPU deployments") says how it was chosen and bench/gpu_check.sh measures it.
GPU_DEFAULT_MAX_BATCH_SIZE = 64


class Resources(Protocol):
    """An online deployment's ResourceRequirements or a batch deployment's BatchResources."""

    @property
    def limits(self) -> dict[str, Any]: ...
    @property
    def requests(self) -> dict[str, Any]: ...


def gpu_count(resources: Resources) -> int:
    """GPUs asked for (the limit, else the request); 0 for a CPU deployment."""
    value: Any = resources.limits.get(GPU_RESOURCE, resources.requests.get(GPU_RESOURCE, 0))
    return int(str(value))


def container_resources(resources: Resources) -> Object:
    """The main container's {"limits", "requests"}: a GPU request becomes a limit as well (both equal)."""
    out: Object = {"limits": dict(resources.limits), "requests": dict(resources.requests)}
    gpus = gpu_count(resources)
    if gpus:
        out["limits"] = {**out.get("limits", {}), GPU_RESOURCE: gpus}
        if GPU_RESOURCE in out.get("requests", {}):
            out["requests"] = {**out["requests"], GPU_RESOURCE: gpus}
    return out


def without_gpu(resources: Object) -> Object:
    """Resources for a container that needs no GPU (an init container)."""
    return {
        kind: {name: q for name, q in values.items() if name != GPU_RESOURCE}
        for kind, values in resources.items()
    }


def _covers(toleration: Toleration) -> bool:
    """A toleration of the spec that tolerates every taint, or that is the spec's own choice for the
    GPU taint (e.g. Equal to GKE's `nvidia.com/gpu=present`): ours is then not added."""
    if toleration.effect not in (None, "NoSchedule"):
        return False
    if toleration.key is None:
        return toleration.operator == "Exists"
    return toleration.key == GPU_RESOURCE


def tolerations(spec_tolerations: list[Toleration], gpus: int) -> list[Object]:
    out: list[Object] = [dump(t) for t in spec_tolerations]
    if gpus and not any(_covers(t) for t in spec_tolerations):
        out.append(dict(GPU_TOLERATION))
    return out


def gpu_env(env: list[Object], gpus: int) -> list[Object]:
    """NVIDIA_DRIVER_CAPABILITIES for a GPU container, unless its env already sets it."""
    if not gpus or any(e.get("name") == DRIVER_CAPABILITIES["name"] for e in env):
        return []
    return [dict(DRIVER_CAPABILITIES)]
