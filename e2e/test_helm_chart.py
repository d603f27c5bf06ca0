"""The chart, installed with the real Helm onto the cluster, as users install it.

The `kubectl` fixture (e2e/conftest.py) installs the operator through `deploy_operator`, which is
`helm upgrade --install` of charts/mlendpoints; these tests look at what that gave, and at uninstall.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.operator_deploy import (
    OPERATOR,
    OPERATOR_NAMESPACE,
    RELEASE,
    Kubectl,
    deploy_operator,
    helm,
    operator_pod,
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
    kubectl: Kubectl, namespace: str, images: Any, mlflow_server: Any
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
        # Leave the operator as the suite found it.
        deploy_operator(
            kubectl,
            images.operator,
            {
                "MLENDPOINTS_MLFLOW_TRACKING_URI": mlflow_server.pod_url,
                "MLENDPOINTS_SERVING_IMAGE": images.serving,
            },
        )
    assert kubectl.get("onlineendpoint", "kept", namespace) is not None
