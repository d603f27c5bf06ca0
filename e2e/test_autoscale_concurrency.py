"""End to end on the local cluster: scaleSettings.type concurrency, the routers as activator.

Scale to zero and back with every request answered (held by the router, then served); scaling up
under load and back down after it; a held request timing out to a 503 with Retry-After when the
model cannot load; mirrored copies never waking a deployment at zero.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from e2e.operator_deploy import Kubectl, wait_for
from e2e.test_operator import condition, deployment, endpoint, wait_ready

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

ROW = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)
# Short windows keep the test short: zero after 5 s idle, once the 6 s stable average is 0 too.
FAST = {"stableWindowSeconds": 6, "scaleToZeroAfterSeconds": 5}


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class Client:
    """POSTs rows to the endpoint's Service (its ClusterIP is reachable from the node)."""

    def __init__(self, kubectl: Kubectl, namespace: str, name: str) -> None:
        service = kubectl.json("-n", namespace, "get", "service", name)
        secret = kubectl.json("-n", namespace, "get", "secret", f"{name}-keys")
        self.url = f"http://{service['spec']['clusterIP']}"
        self.key = base64.b64decode(secret["data"]["primaryKey"]).decode()

    def score(self, timeout: float = 90, rows: int = 1) -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(
            f"{self.url}/score",
            data=json.dumps({"input_data": [ROW] * rows}).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, _lower(resp.headers), json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return exc.code, _lower(exc.headers), json.loads(body) if body else {}
        except OSError as exc:
            return 0, {}, {"error": str(exc)}

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
            return str(resp.read().decode())


def replicas(kubectl: Kubectl, namespace: str, deployment_name: str) -> tuple[int, int]:
    """(spec.replicas, readyReplicas) of the deployment's model servers."""
    obj = kubectl.json("-n", namespace, "get", "deployment", f"{deployment_name}-server")
    return int(obj["spec"].get("replicas", 0)), int(obj.get("status", {}).get("readyReplicas") or 0)


def wait_zero(kubectl: Kubectl, namespace: str, name: str, timeout: float = 120) -> None:
    def at_zero() -> bool:
        if replicas(kubectl, namespace, name) != (0, 0):
            return False
        ready = condition(kubectl.get("onlinedeployment", name, namespace), "Ready")
        return ready.get("status") == "True" and ready.get("reason") == "ScaledToZero"

    wait_for(f"{name} scaled to zero", at_zero, timeout, interval=1)


def test_scale_to_zero_and_back_answers_every_request(kubectl: Kubectl, namespace: str) -> None:
    scale = {"type": "concurrency", "minInstances": 0, "maxInstances": 2, "targetConcurrency": 4, **FAST}
    kubectl.apply(
        [
            endpoint("cold", {"blue": 100}),
            deployment("blue", "cold", "models:/diabetes/1", scaleSettings=scale),
        ],
        namespace,
    )
    wait_ready(kubectl, "onlineendpoint", "cold", namespace)
    client = Client(kubectl, namespace, "cold")
    wait_zero(kubectl, namespace, "blue")
    # At zero the endpoint stays Ready, and kubectl shows current and desired pods.
    assert condition(kubectl.get("onlineendpoint", "cold", namespace), "Ready")["status"] == "True"
    table = kubectl.run("-n", namespace, "get", "oe,od")
    assert "INSTANCES" in table and "DESIRED" in table, table

    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: client.score(), range(6)))
    cold_start = time.monotonic() - started
    assert [status for status, _, _ in answers] == [200] * 6, answers
    # Azure's input_data gets Azure's answer: a bare list of predictions.
    assert all(isinstance(body, list) and len(body) == 1 for _, _, body in answers), answers
    print(f"cold start, 6 held requests all answered in {cold_start:.1f} s")
    events = kubectl.run(
        "-n", namespace, "get", "events", "--sort-by=.lastTimestamp",
        "-o", "custom-columns=T:.lastTimestamp,R:.reason,O:.involvedObject.name",
    )  # fmt: skip
    print(events)
    assert replicas(kubectl, namespace, "blue")[0] >= 1
    # Idle again: back to zero.
    wait_zero(kubectl, namespace, "blue")


def test_concurrency_scales_up_under_load_and_down_after(kubectl: Kubectl, namespace: str) -> None:
    # A stable window longer than a pod's start here (10-20 s on 2 shared cores), so the panic
    # scale-up is not undone before the new pods serve.
    scale = {
        "type": "concurrency", "minInstances": 1, "maxInstances": 3, "targetConcurrency": 1,
        "stableWindowSeconds": 30, "scaleToZeroAfterSeconds": 5,
    }  # fmt: skip
    kubectl.apply(
        [
            endpoint("busy", {"blue": 100}),
            # Six closed-loop clients posting 2,000 rows each (tens of ms in the server) keep several
            # requests in flight; one per pod is the target.
            deployment("blue", "busy", "models:/diabetes/1", scaleSettings=scale),
        ],
        namespace,
    )
    wait_ready(kubectl, "onlineendpoint", "busy", namespace)
    client = Client(kubectl, namespace, "busy")
    assert client.score()[0] == 200
    stop = threading.Event()
    statuses: list[int] = []
    peak = [0]

    def load() -> None:
        while not stop.is_set():
            statuses.append(client.score(rows=2000)[0])

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and peak[0] < 3:
            peak[0] = max(peak[0], replicas(kubectl, namespace, "blue")[1])
            time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert peak[0] == 3, f"ready pods peaked at {peak[0]} under 6 clients (target 1 each, max 3)"
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    # Load gone: down to minInstances after the stable window (never to zero: minInstances 1).
    wait_for("back to 1 pod", lambda: replicas(kubectl, namespace, "blue") == (1, 1), 180, interval=1)


def test_a_held_request_times_out_to_503_with_retry_after(kubectl: Kubectl, namespace: str) -> None:
    scale = {"type": "concurrency", "minInstances": 0, "maxInstances": 1, **FAST}
    kubectl.apply(
        [
            endpoint("broken", {"blue": 100}),
            # Resolves (an https URI needs no registry), but the pod can never fetch it.
            deployment(
                "blue",
                "broken",
                "https://127.0.0.1:1/no-such-model",
                scaleSettings=scale,
                requestSettings={"maxQueueWaitMs": 3000},
            ),
        ],
        namespace,
    )
    wait_for("the keys", lambda: kubectl.get("secret", "broken-keys", namespace), 180, interval=1)
    wait_for("the Service", lambda: kubectl.get("service", "broken", namespace), 180, interval=1)
    client = Client(kubectl, namespace, "broken")
    # RouterReady says a router pod is ready; the Service answers once kube-proxy has it too.
    wait_for("the router answering through its Service", client.healthy, 180, interval=1)
    started = time.monotonic()
    status, headers, body = client.score()
    waited = time.monotonic() - started
    assert status == 503, (status, body)
    assert body["error"]["code"] == "deployment_starting", body
    assert int(headers["retry-after"]) >= 1
    assert 2.5 <= waited <= 15, waited
    assert replicas(kubectl, namespace, "blue")[0] == 1  # it did try to start one


def test_mirror_traffic_never_wakes_a_zero_deployment(kubectl: Kubectl, namespace: str) -> None:
    shadow = {"type": "concurrency", "minInstances": 0, "maxInstances": 1, **FAST}
    kubectl.apply(
        [
            endpoint("mirrored", {"live": 100}, mirrorTraffic={"shadow": 50}),
            deployment("live", "mirrored", "models:/diabetes/1"),
            deployment("shadow", "mirrored", "models:/diabetes/2", scaleSettings=shadow),
        ],
        namespace,
    )
    wait_ready(kubectl, "onlineendpoint", "mirrored", namespace)
    wait_zero(kubectl, namespace, "shadow")
    client = Client(kubectl, namespace, "mirrored")
    answers = [client.score() for _ in range(40)]
    assert {status for status, _, _ in answers} == {200}
    assert {headers.get("x-mlendpoints-served-by") for _, headers, _ in answers} == {"live"}
    time.sleep(4)  # several scaler rounds
    assert replicas(kubectl, namespace, "shadow") == (0, 0)
    dropped = [
        line
        for line in client.metrics().splitlines()
        if line.startswith("mlendpoints_router_mirror_requests_total")
        and 'deployment="shadow"' in line
        and "dropped" in line
    ]
    assert dropped and float(dropped[0].rsplit(" ", 1)[1]) >= 5, dropped
