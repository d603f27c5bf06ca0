"""Status aggregation: children -> OnlineDeployment and OnlineEndpoint status (pure)."""

from __future__ import annotations

from typing import Any

from mlendpoints.api.online import OnlineDeploymentSpec, OnlineDeploymentStatus, OnlineEndpointStatus
from mlendpoints.operator.status import deployment_status, endpoint_status, merge_conditions, pod_failure
from mlendpoints.render.deployment import ResolvedModel
from mlendpoints.render.endpoint import Routing

SPEC = OnlineDeploymentSpec(endpointName="diabetes", model="models:/diabetes@champion", instanceCount=2)
MODEL = ResolvedModel("models:/diabetes/3", "3")
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def workload(ready: int, replicas: int = 2, updated: int = 2, generation: int = 1, observed: int = 1) -> dict:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 2},
        "status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "observedGeneration": observed,
        },
    }


def crashing_pod(message: str) -> dict[str, Any]:
    return {
        "status": {
            "containerStatuses": [
                {
                    "name": "server",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}},
                }
            ]
        }
    }


def conditions(status: Any) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in status.conditions}


def test_ready_deployment() -> None:
    status = deployment_status(
        spec=SPEC,
        generation=4,
        model=MODEL,
        resolve_error=None,
        validation_errors=[],
        workload=workload(2),
        pods=[],
        previous=OnlineDeploymentStatus(),
        now=T0,
    )
    assert (status.replicas, status.readyReplicas) == (2, 2)
    assert (status.modelUri, status.resolvedModelVersion, status.observedGeneration) == (
        "models:/diabetes/3",
        "3",
        4,
    )
    conds = conditions(status)
    assert conds["Ready"] == ("True", "Serving", "2/2 pods ready")
    assert conds["ModelResolved"] == ("True", "Resolved", "models:/diabetes@champion -> version 3")
    assert conds["Progressing"][0] == "False" and conds["Degraded"][0] == "False"


def test_failing_model_load_surfaces_the_termination_message() -> None:
    pods = [crashing_pod("Traceback...\nmodel load failed: No module named 'xgboost'\n")]
    status = deployment_status(
        spec=SPEC,
        generation=1,
        model=MODEL,
        resolve_error=None,
        validation_errors=[],
        workload=workload(0),
        pods=pods,
        previous=OnlineDeploymentStatus(),
        now=T0,
    )
    expected = "server: model load failed: No module named 'xgboost' (exit code 1)"
    assert conditions(status)["Degraded"] == ("True", "PodFailing", expected)
    assert conditions(status)["Ready"] == ("False", "Failed", expected)


def test_pod_failure_reads_init_containers_and_scheduling() -> None:
    fetch_failed = {
        "status": {
            "initContainerStatuses": [
                {
                    "name": "fetch-model",
                    "state": {"terminated": {"exitCode": 1, "message": "fetch failed: 404"}},
                }
            ]
        }
    }
    assert pod_failure([fetch_failed]) == "fetch-model: fetch failed: 404 (exit code 1)"
    pull = {
        "status": {
            "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "ErrImagePull"}}}]
        }
    }
    assert pod_failure([pull]) == "server: ErrImagePull"
    pending = {
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "message": "0/1 nodes"}]}
    }
    assert pod_failure([pending]) == "unschedulable: 0/1 nodes"
    healthy = {"status": {"containerStatuses": [{"name": "server", "state": {"running": {}}}]}}
    assert pod_failure([healthy]) is None


def test_rollout_in_progress_and_unresolved_model() -> None:
    rolling = deployment_status(
        spec=SPEC,
        generation=2,
        model=MODEL,
        resolve_error=None,
        validation_errors=[],
        workload=workload(2, replicas=3, updated=1, generation=2, observed=2),
        pods=[],
        previous=OnlineDeploymentStatus(),
        now=T0,
    )
    assert conditions(rolling)["Progressing"] == ("True", "RollingOut", "1/2 pods updated")
    assert conditions(rolling)["Ready"][0] == "False"
    previous = OnlineDeploymentStatus(modelUri="models:/diabetes/2", resolvedModelVersion="2")
    unresolved = deployment_status(
        spec=SPEC,
        generation=2,
        model=None,
        resolve_error="MLflow: no alias champion",
        validation_errors=[],
        workload=workload(2),
        pods=[],
        previous=previous,
        now=T0,
    )
    assert conditions(unresolved)["ModelResolved"] == ("False", "ResolveFailed", "MLflow: no alias champion")
    assert unresolved.resolvedModelVersion == "2"  # the version still served


def test_condition_times_move_only_on_change() -> None:
    first = deployment_status(
        spec=SPEC,
        generation=1,
        model=MODEL,
        resolve_error=None,
        validation_errors=[],
        workload=workload(0),
        pods=[],
        previous=OnlineDeploymentStatus(),
        now=T0,
    )
    same = deployment_status(
        spec=SPEC,
        generation=1,
        model=MODEL,
        resolve_error=None,
        validation_errors=[],
        workload=workload(0),
        pods=[],
        previous=first,
        now=T1,
    )
    assert same == first  # unchanged world, unchanged status: nothing to write
    flipped = deployment_status(
        spec=SPEC,
        generation=1,
        model=MODEL,
        resolve_error=None,
        validation_errors=[],
        workload=workload(2),
        pods=[],
        previous=first,
        now=T1,
    )
    times = {c.type: c.lastTransitionTime for c in flipped.conditions}
    assert times["Ready"] == T1 and times["ModelResolved"] == T0
    assert merge_conditions([], [], T0) == []


def ready_deployment() -> OnlineDeploymentStatus:
    return deployment_status(
        spec=SPEC,
        generation=1,
        model=MODEL,
        resolve_error=None,
        validation_errors=[],
        workload=workload(2),
        pods=[],
        previous=OnlineDeploymentStatus(),
        now=T0,
    )


ROUTER_UP = {"spec": {"replicas": 2}, "status": {"readyReplicas": 2}}


def test_endpoint_ready_when_router_and_live_deployments_are() -> None:
    status = endpoint_status(
        name="diabetes",
        namespace="ml",
        generation=3,
        routing=Routing({"blue": 100}, {}),
        deployments={"blue": ready_deployment()},
        router=ROUTER_UP,
        previous=OnlineEndpointStatus(),
        deleting=False,
        now=T0,
    )
    assert status.scoringUri == "http://diabetes.ml.svc.cluster.local/score"
    assert status.openapiUri == "http://diabetes.ml.svc.cluster.local/swagger.json"
    assert status.provisioningState == "Succeeded"
    assert status.traffic == {"blue": 100}
    assert [(d.name, d.readyReplicas, d.modelVersion) for d in status.deployments] == [("blue", 2, "3")]
    conds = conditions(status)
    assert conds["Ready"] == ("True", "Serving", "serving blue 100%")
    assert conds["RouterReady"] == ("True", "Available", "2/2 router pods ready")
    assert conds["TrafficValid"] == ("True", "Valid", None)


def test_endpoint_states() -> None:
    waiting = endpoint_status(
        name="diabetes",
        namespace="ml",
        generation=1,
        routing=Routing({"blue": 100}, {}),
        deployments={},
        router=None,
        previous=OnlineEndpointStatus(),
        deleting=False,
        now=T0,
    )
    assert waiting.provisioningState == "Creating"
    assert conditions(waiting)["Ready"] == (
        "False", "NotReady", "deployment blue is not ready; no router pod is ready",
    )  # fmt: skip
    invalid = Routing({}, {}, ["spec.traffic: percentages sum to 110, must be 0 or 100"])
    refused = endpoint_status(
        name="diabetes",
        namespace="ml",
        generation=2,
        routing=invalid,
        deployments={},
        router=ROUTER_UP,
        previous=waiting,
        deleting=False,
        now=T0,
    )
    assert refused.provisioningState == "Failed"
    assert conditions(refused)["TrafficValid"] == (
        "False", "Invalid", "spec.traffic: percentages sum to 110, must be 0 or 100",
    )  # fmt: skip
    succeeded = OnlineEndpointStatus(provisioningState="Succeeded")
    updating = endpoint_status(
        name="diabetes",
        namespace="ml",
        generation=4,
        routing=Routing({"blue": 100}, {}),
        deployments={"blue": OnlineDeploymentStatus()},
        router=ROUTER_UP,
        previous=succeeded,
        deleting=False,
        now=T0,
    )
    assert updating.provisioningState == "Updating"
    deleting = endpoint_status(
        name="diabetes",
        namespace="ml",
        generation=4,
        routing=Routing({}, {}),
        deployments={},
        router=ROUTER_UP,
        previous=succeeded,
        deleting=True,
        now=T0,
    )
    assert deleting.provisioningState == "Deleting"
