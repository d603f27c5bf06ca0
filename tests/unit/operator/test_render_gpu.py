"""GPU deployments (issue 21): what a pod asking for nvidia.com/gpu gets, rendered without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from mlendpoints.render.deployment import ResolvedModel, render_deployment
from mlendpoints.render.discovery import MODERN
from mlendpoints.render.gpu import GPU_DEFAULT_MAX_BATCH_SIZE
from tests.unit.operator.test_render import SETTINGS, by_kind, deployment

MODEL = ResolvedModel("models:/torch-mlp/1", "1")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CAPABILITIES = {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}


def pod_of(**spec: Any) -> dict[str, Any]:
    children = by_kind(render_deployment(deployment("gpu", **spec), MODEL, MODERN, SETTINGS))
    pod: dict[str, Any] = children["Deployment"]["spec"]["template"]["spec"]
    return pod


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_a_gpu_deployment_gets_the_cuda_image_limit_toleration_env_one_worker_per_gpu_and_batching() -> None:
    pod = pod_of(resources={"limits": {"nvidia.com/gpu": 2, "memory": "8Gi"}, "requests": {"cpu": "2"}})
    server, fetch = pod["containers"][0], pod["initContainers"][0]
    assert server["image"] == fetch["image"] == "mlendpoints/serving:dev-cuda"
    assert server["resources"] == {"limits": {"nvidia.com/gpu": 2, "memory": "8Gi"}, "requests": {"cpu": "2"}}
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert CAPABILITIES in server["env"]
    # The device plugin sets NVIDIA_VISIBLE_DEVICES to the GPUs it allocated; the pod spec never does.
    assert not any(e["name"] == "NVIDIA_VISIBLE_DEVICES" for c in (server, fetch) for e in c["env"])
    args = server["args"]
    assert option(args, "--workers") == "2"
    assert option(args, "--max-batch-size") == str(GPU_DEFAULT_MAX_BATCH_SIZE) == "64"
    assert option(args, "--batching") == "on"  # PyTorch is not batched by the server's default (auto)
    assert option(args, "--max-batch-time-ms") == "0"  # the API's default: no wait
    assert "--device" not in args  # auto: the GPU when one is visible
    # The model fetch needs no GPU, and holds none.
    assert fetch["resources"] == {"limits": {"memory": "8Gi"}, "requests": {"cpu": "2"}}
    assert CAPABILITIES not in fetch["env"]
    # Still the restricted profile.
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_a_gpu_request_alone_becomes_a_limit_too() -> None:
    pod = pod_of(resources={"requests": {"nvidia.com/gpu": "1", "cpu": "1"}})
    server = pod["containers"][0]
    assert server["resources"] == {
        "limits": {"nvidia.com/gpu": 1},
        "requests": {"nvidia.com/gpu": 1, "cpu": "1"},
    }
    assert option(server["args"], "--workers") == "1"
    assert pod["initContainers"][0]["resources"] == {"limits": {}, "requests": {"cpu": "1"}}


def test_what_the_spec_says_wins_over_the_gpu_defaults() -> None:
    pod = pod_of(
        resources={"limits": {"nvidia.com/gpu": 4}},
        workers=1,
        batching={"maxBatchSize": 512, "maxBatchTimeMs": 1},
        env=[{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "all"}],
        tolerations=[
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
        ],
    )
    server = pod["containers"][0]
    assert option(server["args"], "--workers") == "1"
    assert option(server["args"], "--max-batch-size") == "512"
    assert option(server["args"], "--max-batch-time-ms") == "1"
    assert [e for e in server["env"] if e["name"] == "NVIDIA_DRIVER_CAPABILITIES"] == [
        {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "all"}
    ]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    # A toleration of every taint covers the GPU's as well.
    assert pod_of(resources={"limits": {"nvidia.com/gpu": 1}}, tolerations=[{"operator": "Exists"}])[
        "tolerations"
    ] == [{"operator": "Exists"}]


def test_a_gpu_scoring_script_deployment_gets_no_batching() -> None:
    pod = pod_of(
        resources={"limits": {"nvidia.com/gpu": 1}},
        codeConfiguration={"configMap": "score-code", "scoringScript": "score.py"},
    )
    args = pod["containers"][0]["args"]
    assert "--max-batch-size" not in args  # run() gets the raw body: nothing to batch
    assert option(args, "--workers") == "1"


def test_a_cpu_deployment_is_unchanged() -> None:
    pod = pod_of(resources={"limits": {"cpu": "2", "memory": "1Gi"}})
    server = pod["containers"][0]
    assert server["image"] == "mlendpoints/serving:dev"
    assert pod["tolerations"] == []
    assert not any(e["name"].startswith("NVIDIA_") for e in server["env"])
    assert "--workers" not in server["args"] and "--max-batch-size" not in server["args"]
    assert server["resources"] == pod["initContainers"][0]["resources"]


def test_a_gpu_batch_deployment_scores_on_the_gpu_and_merges_without_one() -> None:
    from mlendpoints.render.batch import render_merge_job, render_score_jobs
    from tests.unit.batch.test_render_batch import SETTINGS as BATCH_SETTINGS
    from tests.unit.batch.test_render_batch import _deployment, _job

    dep = _deployment(resources={"instanceCount": 2, "requests": {"nvidia.com/gpu": 1, "memory": "8Gi"}})
    [job] = render_score_jobs(_job(), dep, MODEL, BATCH_SETTINGS)
    pod = job["spec"]["template"]["spec"]
    [driver], [fetch] = pod["containers"], pod["initContainers"]
    assert driver["image"] == fetch["image"] == "serving:gpu"
    assert driver["resources"] == {
        "limits": {"nvidia.com/gpu": 1},
        "requests": {"nvidia.com/gpu": 1, "memory": "8Gi"},
    }
    assert fetch["resources"] == {"limits": {}, "requests": {"memory": "8Gi"}}
    assert CAPABILITIES in driver["env"] and CAPABILITIES not in fetch["env"]
    assert pod["tolerations"] == [GPU_TOLERATION]
    merge = render_merge_job(_job(), dep, BATCH_SETTINGS)["spec"]["template"]["spec"]
    [merger] = merge["containers"]
    assert merger["resources"] == {"limits": {}, "requests": {"memory": "8Gi"}}
    assert CAPABILITIES not in merger["env"]
    assert merge["tolerations"] == [GPU_TOLERATION]  # it may still land on the GPU node pool


@pytest.mark.parametrize("kube_version", ["1.31.0", "1.37.0"])
def test_gpu_pods_are_valid_for_the_oldest_and_newest_supported_kubernetes(kube_version: str) -> None:
    """The strict OpenAPI schemas of each release (kubernetes-validate, offline) accept the GPU pods."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="in the [test] extra")
    from mlendpoints.render.batch import render_merge_job, render_score_jobs
    from tests.unit.batch.test_render_batch import SETTINGS as BATCH_SETTINGS
    from tests.unit.batch.test_render_batch import _deployment, _job

    dep = _deployment(resources={"instanceCount": 2, "limits": {"nvidia.com/gpu": "1"}})
    pods = [
        pod_of(resources={"requests": {"nvidia.com/gpu": 2}}, tolerations=[{"operator": "Exists"}]),
        render_score_jobs(_job(), dep, MODEL, BATCH_SETTINGS)[0]["spec"]["template"]["spec"],
        render_merge_job(_job(), dep, BATCH_SETTINGS)["spec"]["template"]["spec"],
    ]
    for spec in pods:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
        kubernetes_validate.validate(pod, kube_version, strict=True)
