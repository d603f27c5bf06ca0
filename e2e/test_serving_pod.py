"""The first true end-to-end test: the serving image, in a pod, answers a scoring request.

A pod from `mlendpoints/serving:dev` runs `mlendpoints-serve` on the diabetes model
(mounted by hostPath: the local cluster has one node, this machine), locked down
as the operator will run it: non-root, read-only root filesystem, no privilege
escalation, no capabilities. It is scored through a Service ClusterIP and must
give the same prediction as the model loaded here.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from e2e.localcluster.fixture import Images, KubeCluster, open_through_service, wait_for
from mlendpoints_serving.contract import SERVER_PORT

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.pod_security(
        "privileged",
        reason="the model reaches its hand-written pod through a hostPath volume (baseline refuses)",
    ),
]

NAME = "diabetes-server"


def server_pod(image: str, model_dir: Path) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": NAME, "labels": {"app": NAME}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
            "containers": [
                {
                    "name": "server",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": [
                        "mlendpoints-serve",
                        "--model-dir",
                        "/model",
                        "--port",
                        str(SERVER_PORT),
                        "--workers",
                        "1",
                    ],
                    "ports": [{"containerPort": SERVER_PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/health", "port": SERVER_PORT},
                        "periodSeconds": 1,
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "model", "mountPath": "/model", "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "model", "hostPath": {"path": str(model_dir), "type": "Directory"}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def test_serving_pod_scores_through_its_service(
    kube_cluster: KubeCluster,
    images: Images,
    namespace: str,
    diabetes_model: Path,
    host_share: Callable[[Path], Path],
) -> None:
    if not kube_cluster.local:
        pytest.skip("the model is mounted by hostPath from this machine: local single-node cluster only")
    import mlflow.pyfunc
    import pandas as pd
    from sklearn.datasets import load_diabetes

    core: Any = client.CoreV1Api(kube_cluster.api_client)
    core.create_namespaced_pod(namespace, server_pod(images.serving, host_share(diabetes_model)))
    core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME},
            "spec": {"selector": {"app": NAME}, "ports": [{"port": 80, "targetPort": SERVER_PORT}]},
        },
    )

    def ready() -> bool:
        status = core.read_namespaced_pod(NAME, namespace).status
        for container in status.container_statuses or []:
            if container.state.terminated or (container.last_state and container.last_state.terminated):
                log = core.read_namespaced_pod_log(NAME, namespace, previous=container.restart_count > 0)
                pytest.fail(f"server exited: {container.state or container.last_state}\n{log[-3000:]}")
        return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])

    wait_for("serving pod Ready", ready, timeout=180, interval=1)

    frame = load_diabetes(as_frame=True).data.iloc[:1]
    body = {"input_data": {"columns": list(frame.columns), "index": [0], "data": frame.to_numpy().tolist()}}
    cluster_ip = core.read_namespaced_service(NAME, namespace).spec.cluster_ip
    request = urllib.request.Request(
        f"http://{cluster_ip}/score",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with open_through_service(request, timeout=30) as resp:
        assert resp.status == 200
        predictions = json.load(resp)

    expected = mlflow.pyfunc.load_model(str(diabetes_model)).predict(pd.DataFrame(frame))
    assert predictions == pytest.approx(list(expected), rel=1e-9)
    assert 25 < predictions[0] < 346  # within the diabetes target's range: a real regression output
