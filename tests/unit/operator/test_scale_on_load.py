"""scaleSettings.type concurrency around the decision: rendering, validation, status, and the scaler
reading router reports and writing the scale subresource (MemoryKube: no cluster needed; the
end-to-end tests run it on the local cluster)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from mlendpoints.api.online import OnlineDeploymentSpec, OnlineDeploymentStatus
from mlendpoints.api.validation import validate_deployment
from mlendpoints.operator.fake_kube import MemoryKube
from mlendpoints.operator.scaler import RouterPods, RouterSeen, Scaler, router_loads
from mlendpoints.operator.status import deployment_status
from mlendpoints.render.deployment import FAST_READINESS, ResolvedModel, render_deployment
from mlendpoints.render.discovery import MODERN
from mlendpoints.render.endpoint import DEFAULT_QUEUE_WAIT_MS, effective_routing, router_config
from mlendpoints_serving import contract
from tests.unit.operator.test_render import SETTINGS, deployment, endpoint

CONCURRENCY = {"type": "concurrency", "minInstances": 0, "maxInstances": 4, "targetConcurrency": 2}
MODEL = ResolvedModel("models:/diabetes/3", "3")


def load(in_flight: int, queued: int, requests: int, seconds: float) -> contract.DeploymentLoad:
    return contract.DeploymentLoad(
        inFlight=in_flight, queued=queued, requests=requests, concurrencySeconds=seconds
    )


def test_the_scaler_owns_the_replicas_and_pods_report_ready_fast() -> None:
    children = render_deployment(deployment(scaleSettings=CONCURRENCY), MODEL, MODERN, SETTINGS)
    kinds = {c["kind"]: c for c in children}
    assert "HorizontalPodAutoscaler" not in kinds  # never both: the HPA would fight the scaler
    workload = kinds["Deployment"]["spec"]
    assert "replicas" not in workload  # applied without it, the scaler's writes stay
    server = workload["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["periodSeconds"] == FAST_READINESS.period == 1
    assert server["readinessProbe"]["initialDelaySeconds"] == 0
    assert server["startupProbe"]["periodSeconds"] == 1
    assert server["startupProbe"]["periodSeconds"] * server["startupProbe"]["failureThreshold"] == 600
    # No init container: the server fetches the model itself (one container start less).
    assert "initContainers" not in workload["template"]["spec"]
    assert server["args"][-2:] == ["--fetch-model-uri", MODEL.uri]
    # A readiness probe the user set is kept.
    own = deployment(scaleSettings=CONCURRENCY, readinessProbe={"period": 7})
    server = render_deployment(own, MODEL, MODERN, SETTINGS)[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["periodSeconds"] == 7


def test_the_router_holds_requests_for_deployments_scaled_on_load() -> None:
    ep = endpoint(traffic={"blue": 100})
    specs = {
        "blue": deployment("blue", scaleSettings=CONCURRENCY).spec,
        "green": deployment("green").spec,
        "red": deployment("red", requestSettings={"maxQueueWaitMs": 250}).spec,
    }
    config = router_config("diabetes", "ml", ep.spec, specs, effective_routing(ep.spec, specs, None))
    blue, green, red = (config.deployments[n] for n in ("blue", "green", "red"))
    assert (blue.autoscaled, blue.maxQueueWaitMs) == (True, DEFAULT_QUEUE_WAIT_MS)
    assert (green.autoscaled, green.maxQueueWaitMs) == (False, None)  # as before: 503 or 429 at once
    assert (red.autoscaled, red.maxQueueWaitMs) == (False, 250)  # maxQueueWaitMs is honoured


def test_zero_instances_only_with_concurrency() -> None:
    spec = deployment(scaleSettings={"type": "targetUtilization", "minInstances": 0}).spec
    assert any("minInstances: 0" in e for e in validate_deployment("blue", spec))
    assert not validate_deployment("blue", deployment(scaleSettings=CONCURRENCY).spec)
    with pytest.raises(ValidationError):
        OnlineDeploymentSpec.model_validate(
            {
                "endpointName": "e",
                "model": "models:/m/1",
                "scaleSettings": {"type": "concurrency", "maxInstances": 0},
            }
        )


def test_a_deployment_at_zero_is_ready_as_scaled_to_zero() -> None:
    spec = deployment(scaleSettings=CONCURRENCY).spec
    at_zero = {
        "metadata": {"generation": 4},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 4},
    }
    status = deployment_status(
        spec=spec,
        generation=1,
        model=MODEL,
        resolve_error=None,
        validation_errors=[],
        workload=at_zero,
        pods=[],
        previous=OnlineDeploymentStatus(),
        now="2026-01-01T00:00:00Z",
    )
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "ScaledToZero")
    assert (status.replicas, status.desiredReplicas) == (0, 0)


def test_router_loads_take_differences_and_restart_on_a_new_instance() -> None:
    first = contract.ScalingReport(instance="a", deployments={"blue": load(2, 1, 10, 100.0)})
    assert router_loads(None, first, 10.0) == {"blue": (3.0, 1, 0)}
    seen = RouterSeen("a", 10.0, dict(first.deployments))
    later = contract.ScalingReport(instance="a", deployments={"blue": load(0, 0, 16, 106.0)})
    assert router_loads(seen, later, 12.0) == {"blue": (3.0, 0, 6)}  # 6 concurrency-seconds in 2 s
    restarted = contract.ScalingReport(instance="b", deployments={"blue": load(1, 0, 1, 0.5)})
    assert router_loads(seen, restarted, 12.0) == {"blue": (1.0, 0, 0)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def body(name: str, scale: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"endpointName": "diabetes", "model": "models:/diabetes/1", "scaleSettings": scale},
    }


def test_the_scaler_wakes_a_zero_deployment_sums_routers_and_writes_only_changes() -> None:
    kube = MemoryKube()
    meta = {"name": "blue-server", "namespace": "ml"}
    kube.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": 0}})
    workloads = {("ml", "blue-server"): kube.objects[("Deployment", "ml", "blue-server")]}
    routers = RouterPods()
    for pod, ip in (("diabetes-router-a", "10.0.0.1"), ("diabetes-router-b", "10.0.0.2")):
        routers.update(
            {
                "metadata": {"name": pod, "namespace": "ml", "labels": {contract.LABEL_ENDPOINT: "diabetes"}},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
            },
            deleted=False,
        )
    reports = {
        "10.0.0.1": contract.ScalingReport(instance="a", deployments={"blue": load(0, 0, 0, 0.0)}),
        "10.0.0.2": contract.ScalingReport(instance="b", deployments={"blue": load(0, 0, 0, 0.0)}),
    }
    fetched: list[str] = []

    async def fetch(ip: str) -> contract.ScalingReport:
        fetched.append(ip)
        return reports[ip]

    clock = Clock()
    scaler = Scaler(kube, routers, workloads, interval=1.0, fetch=fetch, clock=clock)
    bodies = {("ml", "blue"): body("blue", CONCURRENCY), ("ml", "green"): body("green", {"type": "default"})}

    async def rounds(n: int) -> None:
        for _ in range(n):
            clock.now += 1
            await scaler.run_once(bodies)

    asyncio.run(rounds(5))
    assert kube.writes == []  # idle at zero: nothing to write
    assert sorted(set(fetched)) == ["10.0.0.1", "10.0.0.2"]
    # One router holds a request: one pod, at once.
    reports["10.0.0.2"] = contract.ScalingReport(instance="b", deployments={"blue": load(0, 1, 1, 0.5)})
    asyncio.run(rounds(1))
    assert kube.writes == [("scale", kube.writes[0][1])]
    assert kube.peek("Deployment", "ml", "blue-server")["spec"]["replicas"] == 1
    # Both routers busy from now on: 3 + 5 in flight, target 2 per pod -> 4 pods (the max) within
    # the panic window (6 s).
    replicas = []
    for second in range(1, 9):
        reports["10.0.0.1"] = contract.ScalingReport(
            instance="a", deployments={"blue": load(3, 0, 10 * second, 3.0 * second)}
        )
        reports["10.0.0.2"] = contract.ScalingReport(
            instance="b", deployments={"blue": load(5, 0, 1 + 10 * second, 0.5 + 5.0 * second)}
        )
        asyncio.run(rounds(1))
        replicas.append(kube.peek("Deployment", "ml", "blue-server")["spec"]["replicas"])
    assert replicas[5:] == [4, 4, 4], replicas
    assert replicas == sorted(replicas)
    # Each change was one write, and the same load writes nothing more.
    assert len(kube.writes) == len(set(replicas)) + (0 if replicas[0] == 1 else 1)
    assert scaler.last[("ml", "blue")].replicas == 4
    assert ("ml", "green") not in scaler.states  # scaled by instanceCount: left alone


def test_the_crd_leaves_the_readiness_probe_unset() -> None:
    """A schema default would make the API server fill readinessProbe in, and a deployment scaled on
    load would get Azure's 10 s delay instead of the fast probe (seen: 10 s added to every cold start)."""
    from mlendpoints.api.crdgen import crd
    from mlendpoints.api.kinds import ONLINE_DEPLOYMENT

    schema = crd(ONLINE_DEPLOYMENT)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    assert "default" not in spec["readinessProbe"]
    assert spec["livenessProbe"].get("default") == {}
