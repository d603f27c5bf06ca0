"""End to end on the cluster: `scaleSettings.type: targetUtilization` scales a deployment on CPU (an HPA).

The operator renders a HorizontalPodAutoscaler (autoscaling/v2) for the deployment's server pods: CPU
utilization of the 50m request, 50 % target, 1 to 3 pods, the scale-down stabilization window from
`stableWindowSeconds` (15 s). Requests sent through the endpoint's Service (its router) push the model
server's CPU far past its request: the HPA, fed by metrics-server (metrics.k8s.io), adds a pod; with the
load gone it goes back to one pod once the window has passed. The local cluster runs the HPA controller
every 5 s (cluster.sh), metrics-server every 10 s; a cluster at the defaults (15 s) is slower but within
the bounds.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest

from e2e.operator_deploy import Kubectl, wait_for

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

API = "mlendpoints.io/v1alpha1"
READY_TIMEOUT = 240
SCALE_UP_TIMEOUT = 150
SCALE_DOWN_TIMEOUT = 150
LOAD_THREADS = 6
ROW = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)


def manifests() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": API,
            "kind": "OnlineEndpoint",
            "metadata": {"name": "diabetes"},
            "spec": {"traffic": {"blue": 100}, "router": {"replicas": 1}},
        },
        {
            "apiVersion": API,
            "kind": "OnlineDeployment",
            "metadata": {"name": "blue"},
            "spec": {
                "endpointName": "diabetes",
                "model": "models:/diabetes@champion",
                "workers": 1,
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                "scaleSettings": {
                    "type": "targetUtilization",
                    "minInstances": 1,
                    "maxInstances": 3,
                    "targetUtilizationPercentage": 50,
                    "pollingInterval": 1,
                    "stableWindowSeconds": 15,
                },
            },
        },
    ]


def ready(kubectl: Kubectl, kind: str, name: str, namespace: str) -> bool:
    obj = kubectl.get(kind, name, namespace) or {}
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (obj.get("status") or {}).get("conditions", [])
    )


class Load:
    """Threads POSTing a diabetes row to the endpoint's Service (ClusterIP, reachable from the node)."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(LOAD_THREADS)]

    def run(self) -> None:
        body = json.dumps({"input_data": [ROW] * 20}).encode()
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        while not self.stop.is_set():
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers)
                with urllib.request.urlopen(request, timeout=10) as resp:
                    resp.read()
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
                time.sleep(0.1)
            with self.lock:
                self.statuses[status] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def test_cpu_load_scales_out_then_back_to_one(kube_cluster: Any, kubectl: Kubectl, namespace: str) -> None:
    if "v1beta1" not in kube_cluster.served_versions("metrics.k8s.io"):
        # The local cluster runs metrics-server (cluster.sh); kind, for one, does not by default.
        assert not kube_cluster.local, "the local cluster serves no metrics.k8s.io: see metrics-server.log"
        pytest.skip("this cluster serves no metrics.k8s.io (install metrics-server): no CPU for an HPA")
    ns = namespace
    kubectl.apply(manifests(), ns)
    wait_for(
        "OnlineDeployment blue Ready",
        lambda: ready(kubectl, "onlinedeployment", "blue", ns),
        READY_TIMEOUT,
        1,
    )
    wait_for(
        "OnlineEndpoint diabetes Ready",
        lambda: ready(kubectl, "onlineendpoint", "diabetes", ns),
        READY_TIMEOUT,
        1,
    )

    hpa = kubectl.json("-n", ns, "get", "horizontalpodautoscaler", "blue-server")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "blue-server"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 15
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0

    def hpa_status() -> dict[str, Any]:
        return kubectl.json("-n", ns, "get", "horizontalpodautoscaler", "blue-server").get("status") or {}

    def replicas() -> int:
        return int(kubectl.json("-n", ns, "get", "deployment", "blue-server")["spec"].get("replicas", 0))

    def describe() -> str:
        return (
            kubectl.try_run("-n", ns, "describe", "horizontalpodautoscaler", "blue-server").stdout
            + kubectl.try_run("top", "pods", "-n", ns).stdout
            + kubectl.try_run("top", "pods", "-n", ns).stderr
        )

    # The HPA reads the server's CPU (metrics-server answers for the pod) before any load.
    try:
        wait_for(
            "the HPA's first CPU reading",
            lambda: any(
                m.get("resource", {}).get("current", {}).get("averageUtilization") is not None
                for m in hpa_status().get("currentMetrics") or []
            ),
            90,
            interval=2,
        )
    except TimeoutError:
        print(describe())
        raise
    assert replicas() == 1

    service = kubectl.json("-n", ns, "get", "service", "diabetes")
    secret = kubectl.json("-n", ns, "get", "secret", "diabetes-keys")
    key = base64.b64decode(secret["data"]["primaryKey"]).decode()
    url = f"http://{service['spec']['clusterIP']}/score"

    started = time.monotonic()
    with Load(url, key) as load:
        try:
            wait_for("the HPA adding a pod", lambda: replicas() >= 2, SCALE_UP_TIMEOUT, interval=1)
        except TimeoutError:
            print(describe(), dict(load.statuses))
            raise
        scaled_up = time.monotonic() - started
        print(f"\nscaled to {replicas()} in {scaled_up:.0f}s under load: {dict(load.statuses)}; {describe()}")
    assert load.statuses[200] > 0, dict(load.statuses)

    stopped = time.monotonic()
    try:
        wait_for("the HPA back to one pod", lambda: replicas() == 1, SCALE_DOWN_TIMEOUT, interval=1)
    except TimeoutError:
        print(describe())
        raise
    print(f"back to 1 pod {time.monotonic() - stopped:.0f}s after the load stopped")
    events = kubectl.try_run("-n", ns, "get", "events", "--field-selector", "involvedObject.name=blue-server")
    assert "SuccessfulRescale" in events.stdout, events.stdout
