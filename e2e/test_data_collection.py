"""End to end: data collection to an S3-compatible store reachable from pods, and `mlendpoints compare`.

moto's S3 server runs on this machine, bound to all interfaces; pods reach it at the host address
(`kube_cluster.host_address`, the docker bridge gateway 172.17.0.1 on the local cluster) through the
`AWS_ENDPOINT_URL` of a Secret the deployments name in `dataCollector.credentialsSecret`. An endpoint
serves `models:/diabetes/1` live and mirrors 50% to the same version, then to version 2; `mlendpoints
compare` (run here, reading the bucket at 127.0.0.1) reports 100% agreement for the first pair and less
for the second. A bucket that does not exist turns DataCollectorReady False, naming the error, while
every live request is still answered.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.operator_deploy import Kubectl
from tests.fixtures.servers import free_port, running

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)
from e2e.localcluster.fixture import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

API = "mlendpoints.io/v1alpha1"
CLI = str(Path(sys.executable).parent / "mlendpoints")
READY_TIMEOUT = 300
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
BUCKET = "records"
DESTINATION = f"s3://{BUCKET}/online"


@pytest.fixture(scope="module")
def moto_store(kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's S3 server on all interfaces; yields the env for pods (host address) and for this machine."""
    port = free_port("0.0.0.0")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "0.0.0.0", "-p", str(port)]
    with running(argv, ready_url=f"http://127.0.0.1:{port}/moto-api/", log=log):
        import boto3

        local = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3",
            endpoint_url=local,
            aws_access_key_id="e2e",
            aws_secret_access_key="e2e",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        yield {"pod": f"http://{kube_cluster.host_address}:{port}", "local": local}


def credentials_secret(endpoint_url: str) -> dict[str, Any]:
    values = {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "e2e",
        "AWS_SECRET_ACCESS_KEY": "e2e",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "records-s3"},
        "type": "Opaque",
        "stringData": values,
    }


def deployment(name: str, model: str, destination: str = DESTINATION) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "OnlineDeployment",
        "metadata": {"name": name},
        "spec": {
            "endpointName": "shadowed",
            "model": model,
            "workers": 1,
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            "dataCollector": {
                "destination": destination,
                "credentialsSecret": "records-s3",
                "headers": ["x-trace"],
            },
        },
    }


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def ready(kubectl: Kubectl, kind: str, name: str, namespace: str) -> None:
    def check() -> bool:
        return condition(kubectl.get(kind, name, namespace), "Ready").get("status") == "True"

    try:
        wait_for(f"{kind}/{name} Ready", check, READY_TIMEOUT, interval=1)
    except TimeoutError:
        print(kubectl.try_run("-n", namespace, "get", "all,oe,od", "-o", "wide").stdout)
        raise


def score_many(kubectl: Kubectl, namespace: str, count: int) -> list[int]:
    service = kubectl.json("-n", namespace, "get", "service", "shadowed")
    secret = kubectl.json("-n", namespace, "get", "secret", "shadowed-keys")
    key = base64.b64decode(secret["data"]["primaryKey"]).decode()
    statuses = []
    for i in range(count):
        row = {c: ((i * 7 + j * 3) % 11 - 5) / 100 for j, c in enumerate(COLUMNS)}
        request = urllib.request.Request(
            f"http://{service['spec']['clusterIP']}/score",
            data=json.dumps({"input_data": [row]}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", "x-trace": str(i)},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                statuses.append(resp.status)
        except OSError as exc:
            statuses.append(getattr(exc, "code", 0))
    return statuses


def compare(kube_cluster: Any, namespace: str, store: dict[str, str], *args: str) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_cluster.kubeconfig),
        "AWS_ENDPOINT_URL": store["local"],
        "AWS_ACCESS_KEY_ID": "e2e",
        "AWS_SECRET_ACCESS_KEY": "e2e",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    argv = [CLI, "compare", "shadowed", "-n", namespace, "--since", "1h", "--json", *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def patch(kubectl: Kubectl, namespace: str, kind: str, name: str, body: dict[str, Any]) -> None:
    kubectl.run("-n", namespace, "patch", kind, name, "--type", "merge", "-p", json.dumps(body))


def test_mirror_agreement_by_version_and_a_failing_destination(
    kubectl: Kubectl, kube_cluster: Any, namespace: str, moto_store: dict[str, str]
) -> None:
    ns = namespace
    endpoint = {
        "apiVersion": API,
        "kind": "OnlineEndpoint",
        "metadata": {"name": "shadowed"},
        "spec": {"traffic": {"blue": 100}, "mirrorTraffic": {"same": 50}, "router": {"replicas": 1}},
    }
    kubectl.apply(
        [
            credentials_secret(moto_store["pod"]),
            endpoint,
            deployment("blue", "models:/diabetes/1"),
            deployment("same", "models:/diabetes/1"),
            deployment("other", "models:/diabetes/2"),
        ],
        ns,
    )
    for name in ("blue", "same", "other"):
        ready(kubectl, "onlinedeployment", name, ns)
    ready(kubectl, "onlineendpoint", "shadowed", ns)
    router = kubectl.json("-n", ns, "get", "deployment", "shadowed-router")["spec"]["template"]["spec"]
    assert {"secretRef": {"name": "records-s3"}} in router["containers"][0]["envFrom"]

    assert set(score_many(kubectl, ns, 80)) == {200}
    patch(kubectl, ns, "onlineendpoint", "shadowed", {"spec": {"mirrorTraffic": {"same": None, "other": 50}}})
    wait_for(
        "the router mirroring to other",
        lambda: (
            '"other":50'
            in kubectl.json("-n", ns, "get", "configmap", "shadowed-router")["data"]["router.json"]
        ),
        30,
    )
    time.sleep(2)  # the router's watch applies the ConfigMap within a second
    assert set(score_many(kubectl, ns, 80)) == {200}

    def written() -> bool:
        return (
            condition(kubectl.get("onlinedeployment", "blue", ns), "DataCollectorReady").get("status")
            == "True"
        )

    wait_for("blue's DataCollectorReady", written, 120, interval=2)

    def pairs() -> dict[tuple[str, str], dict[str, Any]] | None:
        reports = {(r["live"], r["mirror"]): r for r in compare(kube_cluster, ns, moto_store)}
        both = ("blue", "same") in reports and ("blue", "other") in reports
        return reports if both and reports[("blue", "other")]["compared"] >= 10 else None

    reports = wait_for("records of both mirrors", pairs, 60, interval=3)
    same, other = reports[("blue", "same")], reports[("blue", "other")]
    print(json.dumps(reports[("blue", "same")]), json.dumps(other))
    assert same["compared"] >= 10 and same["agreement"] == 1.0 and same["max_abs_diff"] == 0.0
    assert other["agreement"] < 1.0 and other["mean_abs_diff"] > 0
    # The human-readable table names both pairs.
    env = {**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig), "AWS_ENDPOINT_URL": moto_store["local"]}
    env |= {"AWS_ACCESS_KEY_ID": "e2e", "AWS_SECRET_ACCESS_KEY": "e2e", "AWS_DEFAULT_REGION": "us-east-1"}
    env["COLUMNS"] = "200"  # no terminal here: rich would wrap the table at 80 columns, cells and all
    table = subprocess.run(
        [CLI, "compare", "shadowed", "-n", ns, "--since", "1h"], env=env, capture_output=True, text=True
    )
    assert table.returncode == 0 and "100.0%" in table.stdout and "other" in table.stdout, table.stdout

    # A bucket that does not exist: the condition names it; live requests are all answered.
    patch(
        kubectl,
        ns,
        "onlinedeployment",
        "blue",
        {"spec": {"dataCollector": {"destination": "s3://no-such-bucket/records"}}},
    )
    time.sleep(3)
    assert set(score_many(kubectl, ns, 30)) == {200}

    def failing() -> dict[str, Any] | None:
        cond = condition(kubectl.get("onlinedeployment", "blue", ns), "DataCollectorReady")
        return cond if cond.get("status") == "False" else None

    cond = wait_for("blue's DataCollectorReady False", failing, 120, interval=2)
    assert cond["reason"] == "DestinationFailed" and "no-such-bucket" in cond["message"], cond
