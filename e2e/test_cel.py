"""The CRDs' CEL rules on a real API server: each refuses what validation.py refuses, with its message.

No operator and no webhook here: what `kubectl apply` meets on a cluster where
only the CRDs are installed. Every rule has a valid and an invalid resource;
the API server's error must name the field and carry the message that
`mlendpoints.api.validation` gives for the same input (so local mode, the
reconciler's conditions and the API server say the same thing). Server-side
dry run: nothing is stored.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.localcluster.fixture import KubeCluster
from mlendpoints.api.common import API_GROUP, API_VERSION
from mlendpoints.api.online import OnlineDeploymentSpec, OnlineEndpointSpec
from mlendpoints.api.validation import (
    validate_deployment,
    validate_endpoint,
    validate_model_uri,
    validate_name,
)

pytestmark = [pytest.mark.cluster]
PLURALS = {
    "OnlineEndpoint": "onlineendpoints",
    "OnlineDeployment": "onlinedeployments",
    "BatchDeployment": "batchdeployments",
}


def dry_run_create(
    cluster: KubeCluster, namespace: str, kind: str, name: str, spec: dict[str, Any]
) -> str | None:
    """None when the API server accepts the resource; else its error message."""
    body = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }
    try:
        client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURALS[kind], body, dry_run="All"
        )
    except ApiException as exc:
        assert exc.status == 422, exc.body
        return str(json.loads(exc.body or "{}")["message"])
    return None


def assert_refused_like(message: str | None, python_errors: list[str]) -> None:
    """Every `FIELD: TEXT` of the Python validator is in the API server's answer, with its text.

    The API server names the field, or the map holding it where a rule cannot
    name the entry (`spec.mirrorTraffic` for `spec.mirrorTraffic.green`).
    """
    assert message is not None, f"the API server accepted what validation.py refuses: {python_errors}"
    assert python_errors, "validation.py accepts it: the case is wrong"
    for error in python_errors:
        field, text = error.split(": ", 1)
        parts = field.split(".")
        named = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
        assert text in message, f"{text!r} not in {message!r}"
        assert any(f"{name}: " in message for name in named), f"none of {named} in {message!r}"


ENDPOINT_CASES = {
    # name: (spec, is valid)
    "traffic-100-and-a-mirror": ({"traffic": {"blue": 100}, "mirrorTraffic": {"green": 10}}, True),
    "traffic-all-zero": ({"traffic": {"blue": 0, "green": 0}}, True),
    "traffic-sums-to-110": ({"traffic": {"blue": 90, "green": 20}}, False),
    "traffic-sums-to-50": ({"traffic": {"blue": 50}}, False),
    "mirror-to-a-live-deployment": (
        {"traffic": {"blue": 90, "green": 10}, "mirrorTraffic": {"green": 5}},
        False,
    ),
}


@pytest.mark.parametrize("case", sorted(ENDPOINT_CASES))
def test_online_endpoint_rules(kube_cluster: KubeCluster, namespace: str, crds: None, case: str) -> None:
    spec, valid = ENDPOINT_CASES[case]
    message = dry_run_create(kube_cluster, namespace, "OnlineEndpoint", "ep", spec)
    python_errors = validate_endpoint(OnlineEndpointSpec.model_validate(spec))
    if valid:
        assert message is None and python_errors == []
    else:
        assert_refused_like(message, python_errors)


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"mirrorTraffic": {"a": 10, "b": 10}}, "spec.mirrorTraffic", "must have at most 1 item"),
        ({"mirrorTraffic": {"a": 60}}, "spec.mirrorTraffic.a", "should be less than or equal to 50"),
        ({"traffic": {"a": 101}}, "spec.traffic.a", "should be less than or equal to 100"),
    ],
)
def test_online_endpoint_schema_ranges(
    kube_cluster: KubeCluster, namespace: str, crds: None, spec: dict[str, Any], field: str, text: str
) -> None:
    message = dry_run_create(kube_cluster, namespace, "OnlineEndpoint", "ep", spec)
    assert message is not None and field in message and text in message, message


@pytest.mark.parametrize(
    "name",
    ["a.b", "x" * 51, "ok-name"],
)
def test_endpoint_name_is_a_dns_label(
    kube_cluster: KubeCluster, namespace: str, crds: None, name: str
) -> None:
    message = dry_run_create(kube_cluster, namespace, "OnlineEndpoint", name, {})
    if python_errors := validate_name(name):
        assert_refused_like(message, python_errors)
    else:
        assert message is None


DEPLOYMENT_CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "alias": ({"model": "models:/diabetes@champion"}, True),
    "version": ({"model": "models:/diabetes/3"}, True),
    "s3-and-absolute-mount": ({"model": "s3://bucket/model", "modelMountPath": "/models/m"}, True),
    "autoscaled-with-cpu": (
        {
            "model": "/mnt/m",
            "resources": {"requests": {"cpu": "500m"}},
            "scaleSettings": {"type": "targetUtilization", "minInstances": 1, "maxInstances": 3},
        },
        True,
    ),
    "registry-uri-without-version": ({"model": "models:/diabetes"}, False),
    "run-uri-without-path": ({"model": "runs:/abc123"}, False),
    "unknown-scheme": ({"model": "ftp://host/model"}, False),
    "relative-mount-path": ({"model": "/mnt/m", "modelMountPath": "models"}, False),
    "min-above-max": (
        {
            "model": "/mnt/m",
            "resources": {"requests": {"cpu": "1"}},
            "scaleSettings": {"type": "targetUtilization", "minInstances": 3, "maxInstances": 2},
        },
        False,
    ),
    "autoscaled-without-cpu": ({"model": "/mnt/m", "scaleSettings": {"type": "targetUtilization"}}, False),
    "collector-with-headers": (
        {"model": "/mnt/m", "dataCollector": {"destination": "s3://b/r", "headers": ["X-Trace"]}},
        True,
    ),
    "collector-keeping-authorization": (
        {
            "model": "/mnt/m",
            "dataCollector": {"destination": "/records", "headers": ["X-Trace", "Authorization"]},
        },
        False,
    ),
}


@pytest.mark.parametrize("case", sorted(DEPLOYMENT_CASES))
def test_online_deployment_rules(kube_cluster: KubeCluster, namespace: str, crds: None, case: str) -> None:
    spec, valid = DEPLOYMENT_CASES[case]
    spec = {"endpointName": "ep", **spec}
    message = dry_run_create(kube_cluster, namespace, "OnlineDeployment", "blue", spec)
    python_errors = validate_deployment("blue", OnlineDeploymentSpec.model_validate(spec))
    if valid:
        assert message is None and python_errors == []
    else:
        assert_refused_like(message, python_errors)


@pytest.mark.parametrize("model", ["models:/m@prod", "runs:/", "gs://bucket/m"])
def test_batch_deployment_model_uri(
    kube_cluster: KubeCluster, namespace: str, crds: None, model: str
) -> None:
    message = dry_run_create(
        kube_cluster, namespace, "BatchDeployment", "bd", {"endpointName": "be", "model": model}
    )
    if python_errors := validate_model_uri(model):
        assert_refused_like(message, python_errors)
    else:
        assert message is None


def test_batch_settings_ranges(kube_cluster: KubeCluster, namespace: str, crds: None) -> None:
    spec = {"endpointName": "be", "model": "/mnt/m", "settings": {"miniBatchSize": 0}}
    message = dry_run_create(kube_cluster, namespace, "BatchDeployment", "bd", spec)
    assert message is not None and "spec.settings.miniBatchSize" in message, message
    assert "should be greater than or equal to 1" in message
