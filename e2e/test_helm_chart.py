"""The chart, installed with the real Helm onto the cluster, as users install it.

The `kubectl` fixture (e2e/conftest.py) installs the operator through `deploy_operator`, which is
`helm upgrade --install` of charts/mlendpoints; these tests look at what that gave, and at uninstall.
"""

from __future__ import annotations

import collections
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import operator_env
from e2e.localcluster.fixture import open_through_service
from e2e.operator_deploy import (
    OPERATOR,
    OPERATOR_NAMESPACE,
    RELEASE,
    ROOT,
    Kubectl,
    deploy_operator,
    helm,
    operator_pod,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]


def test_helm_install_gives_a_ready_operator_in_the_restricted_profile(kubectl: Kubectl) -> None:
    status = json.loads(helm(kubectl, "status", RELEASE, "--namespace", OPERATOR_NAMESPACE, "-o", "json"))
    assert status["info"]["status"] == "deployed"
    assert operator_pod(kubectl), "no Ready operator pod"
    # The API server's own Pod Security admission judges the running pod: a server-side dry run of
    # the restricted label warns about every existing pod that would violate it.
    out = kubectl.run(
        "label", "--dry-run=server", "--overwrite", "namespace", OPERATOR_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted", check=False,
    )  # fmt: skip
    assert "violate" not in out, out
    assert "labeled" in out


def test_helm_uninstall_keeps_crds_and_users_resources(
    kubectl: Kubectl, namespace: str, redeploy_operator: Callable[..., None]
) -> None:
    endpoint = {
        "apiVersion": "mlendpoints.io/v1alpha1",
        "kind": "OnlineEndpoint",
        "metadata": {"name": "kept"},
        "spec": {"traffic": {}, "router": {"replicas": 1}},
    }
    kubectl.apply([endpoint], namespace)
    try:
        helm(kubectl, "uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait")
        assert kubectl.get("deployment", OPERATOR, OPERATOR_NAMESPACE) is None
        assert kubectl.try_run("get", "clusterrole", OPERATOR).returncode != 0
        assert kubectl.try_run("get", "crd", "onlineendpoints.mlendpoints.io").returncode == 0
        assert kubectl.get("onlineendpoint", "kept", namespace) is not None
    finally:
        redeploy_operator()  # leave the operator as the suite found it
    assert kubectl.get("onlineendpoint", "kept", namespace) is not None


def endpoint_with_blue(name: str) -> list[dict[str, Any]]:
    api = "mlendpoints.io/v1alpha1"
    return [
        {
            "apiVersion": api,
            "kind": "OnlineEndpoint",
            "metadata": {"name": name},
            "spec": {"authMode": "none", "traffic": {"blue": 100}, "router": {"replicas": 1}},
        },
        {
            "apiVersion": api,
            "kind": "OnlineDeployment",
            "metadata": {"name": "blue"},
            "spec": {"endpointName": name, "model": "models:/diabetes@champion", "instanceCount": 1},
        },
    ]


def is_ready(kubectl: Kubectl, kind: str, name: str, namespace: str) -> bool:
    obj = kubectl.get(kind, name, namespace) or {}
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class ScoringLoop(threading.Thread):
    """Scores one diabetes row after another through the endpoint's Service, counting every outcome."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop = url, threading.Event()
        self.outcomes: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        row = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)
        body = json.dumps({"input_data": [row]}).encode()
        while not self.stop.is_set():
            request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    self.outcomes[str(resp.status)] += 1
            except urllib.error.HTTPError as exc:
                self.outcomes[str(exc.code)] += 1
            except OSError as exc:
                self.outcomes[type(exc).__name__] += 1


def test_helm_upgrade_rolls_the_operator_while_the_endpoint_keeps_serving(
    kubectl: Kubectl, namespace: str, redeploy_operator: Callable[..., None]
) -> None:
    kubectl.apply(endpoint_with_blue("diabetes"), namespace)
    wait_for("the endpoint Ready", lambda: is_ready(kubectl, "onlineendpoint", "diabetes", namespace), 240)
    ip = kubectl.json("-n", namespace, "get", "service", "diabetes")["spec"]["clusterIP"]
    open_through_service(f"http://{ip}/health", timeout=5).close()
    old_pod = operator_pod(kubectl)
    loop = ScoringLoop(f"http://{ip}/score")
    loop.start()
    try:
        redeploy_operator({"logLevel": "debug"})  # a changed values file: the operator pod is replaced
        time.sleep(3)
    finally:
        loop.stop.set()
        loop.join(30)
        redeploy_operator()
    assert operator_pod(kubectl) != old_pod
    print(f"scored during the upgrade: {dict(loop.outcomes)}")
    assert set(loop.outcomes) == {"200"}, loop.outcomes
    assert loop.outcomes["200"] >= 20


def test_watch_namespaces_ignores_other_namespaces(
    kubectl: Kubectl, namespace: str, redeploy_operator: Callable[..., None]
) -> None:
    other = f"{namespace[:50]}-unwatched"
    kubectl.run("create", "namespace", other)
    quiet = [
        {
            "apiVersion": "mlendpoints.io/v1alpha1",
            "kind": "OnlineEndpoint",
            "metadata": {"name": "quiet"},
            "spec": {"traffic": {}, "router": {"replicas": 1}},
        }
    ]
    try:
        redeploy_operator({"watchNamespaces": [namespace]})
        kubectl.apply(quiet, other)
        kubectl.apply(quiet, namespace)
        wait_for(
            "the watched endpoint's router", lambda: kubectl.get("deployment", "quiet-router", namespace), 60
        )
        time.sleep(5)  # the unwatched one had as long, and more
        assert kubectl.get("deployment", "quiet-router", other) is None
        assert not (kubectl.get("onlineendpoint", "quiet", other) or {}).get("status")
    finally:
        redeploy_operator()
        kubectl.run("delete", "namespace", other, "--wait=false")
    # Cluster-wide again: the other namespace's endpoint is reconciled now.
    wait_for("the other endpoint's router", lambda: kubectl.get("deployment", "quiet-router", other), 60)


# The chart as the previous stop submitted it (version 0.1.0, before pull secrets, object-store
# credentials, digests and uid 10001): users upgrade from what they installed, not from main.
PREVIOUS_CHART_COMMIT = "a081dfb5b561c828134ef30d7983c0fe5b7dad57"


def previous_chart(into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS_CHART_COMMIT, "charts/mlendpoints"],
        capture_output=True, check=False,
    )  # fmt: skip
    if archive.returncode != 0:
        pytest.skip(
            f"this clone lacks commit {PREVIOUS_CHART_COMMIT[:12]} (shallow?): {archive.stderr.decode()}"
        )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "charts" / "mlendpoints"


def identities(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """uid of every user resource and every child the operator made for it, by kind/name."""
    kinds = (
        "onlineendpoints,onlinedeployments,deployments,services,configmaps,serviceaccounts,roles,rolebindings"
    )
    out = kubectl.json("-n", namespace, "get", kinds)
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["uid"]
        for o in out["items"]
        if o["kind"] in {"OnlineEndpoint", "OnlineDeployment"}
        or any(
            r.get("apiVersion", "").startswith("mlendpoints.io/")
            for r in o["metadata"].get("ownerReferences", [])
        )
    }


def test_helm_upgrade_from_the_previous_chart_version_keeps_every_resource(
    kubectl: Kubectl,
    namespace: str,
    images: Any,
    mlflow_server: Any,
    redeploy_operator: Callable[..., None],
    tmp_path: Path,
) -> None:
    old_chart = previous_chart(tmp_path)
    helm(kubectl, "uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait")
    try:
        # The old chart runs this checkout's operator image (the old image is not built here): what
        # the old chart's RBAC cannot grant is turned off, as the old operator never rendered it.
        old_env = {**operator_env(images, mlflow_server), "MLENDPOINTS_NETWORK_POLICIES": "false"}
        deploy_operator(kubectl, images.operator, old_env, chart=old_chart)
        kubectl.apply(endpoint_with_blue("diabetes"), namespace)
        wait_for(
            "the endpoint Ready", lambda: is_ready(kubectl, "onlineendpoint", "diabetes", namespace), 240
        )
        before = identities(kubectl, namespace)
        assert {"Deployment/diabetes-router", "Deployment/blue-server", "Service/diabetes"} <= set(before)
        redeploy_operator()  # helm upgrade to this checkout's chart
        history = json.loads(
            helm(kubectl, "history", RELEASE, "--namespace", OPERATOR_NAMESPACE, "-o", "json")
        )
        assert [h["status"] for h in history][-2:] == ["superseded", "deployed"]
    finally:
        redeploy_operator()
    wait_for("the endpoint Ready", lambda: is_ready(kubectl, "onlineendpoint", "diabetes", namespace), 120)
    assert identities(kubectl, namespace) == before, "an object was replaced or lost by the upgrade"
    # What the new chart adds, the upgraded operator renders: the model servers' NetworkPolicy.
    wait_for("blue's NetworkPolicy", lambda: kubectl.get("networkpolicy", "blue-server", namespace), 60)
    ip = kubectl.json("-n", namespace, "get", "service", "diabetes")["spec"]["clusterIP"]
    row = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)
    request = urllib.request.Request(
        f"http://{ip}/score", json.dumps({"input_data": [row]}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        assert len(json.loads(resp.read())) == 1
