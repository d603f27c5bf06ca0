"""Fixtures shared by the end-to-end suites."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.operator_deploy import Kubectl, deploy_operator


@pytest.fixture(scope="module")
def kubectl(kube_cluster: Any, images: Any, mlflow_server: Any) -> Kubectl:
    """The operator, from its image, running in the cluster (re-applied per module: suites may restart it)."""
    k = Kubectl(str(kube_cluster.kubeconfig))
    deploy_operator(
        k,
        images.operator,
        {
            "MLENDPOINTS_MLFLOW_TRACKING_URI": mlflow_server.pod_url,
            "MLENDPOINTS_SERVING_IMAGE": images.serving,
        },
    )
    return k
