"""Fixtures shared by the end-to-end suites."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from e2e.operator_deploy import ROOT, Kubectl, deploy_operator


@pytest.fixture(scope="module")
def kubectl(kube_cluster: Any, images: Any, mlflow_server: Any) -> Kubectl:
    """The operator, from its image, running in the cluster (re-applied per module: suites may restart it)."""
    k = Kubectl(str(kube_cluster.kubeconfig))
    deploy_operator(k, images.operator, operator_env(images, mlflow_server))
    return k


def operator_env(images: Any, mlflow_server: Any) -> dict[str, str]:
    return {
        "MLENDPOINTS_MLFLOW_TRACKING_URI": mlflow_server.pod_url,
        "MLENDPOINTS_SERVING_IMAGE": images.serving,
    }


@pytest.fixture
def redeploy_operator(
    kubectl: Kubectl, images: Any, mlflow_server: Any
) -> Callable[[Mapping[str, Any] | None], None]:
    """`helm upgrade` of the operator with other chart values (None: the suite's own)."""

    def redeploy(values: Mapping[str, Any] | None = None) -> None:
        deploy_operator(kubectl, images.operator, operator_env(images, mlflow_server), values=values)

    return redeploy


@pytest.fixture(scope="module")
def crds(kube_cluster: Any) -> None:
    """Only the CRDs (no operator, no webhook): what the API server alone checks."""
    k = Kubectl(str(kube_cluster.kubeconfig))
    k.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    k.run("wait", "--for", "condition=established", "--timeout=60s", "-f", str(ROOT / "crds"))
