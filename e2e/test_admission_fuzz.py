"""Admission fuzzing: generated resources, valid and invalid, applied to the real API server with the
operator and its webhook running (issue 15).

Each case is a valid OnlineEndpoint, OnlineDeployment or BatchJob with one field set to a generated
value (a wrong type, out of range, unknown, huge). The API server either refuses it with a 4xx that
names the field, or stores it, and then the operator must give it a status whose conditions say what
is wrong. Throughout, the operator must not crash or restart, and must not fail to apply a child (an
invalid child is one the API server refuses: the operator logs that as an apply error).
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.operator_deploy import OPERATOR_NAMESPACE, OPERATOR_PODS, Kubectl, operator_pod, wait_for
from mlendpoints.api.common import API_GROUP, API_VERSION

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

PLURALS = {
    "OnlineEndpoint": "onlineendpoints",
    "OnlineDeployment": "onlinedeployments",
    "BatchJob": "batchjobs",
}
# Valid bases. The deployment's model does not exist, so a stored deployment is reconciled to a
# "model not found" condition without starting pods; the endpoint's router is one small pod.
BASES: dict[str, dict[str, Any]] = {
    "OnlineEndpoint": {"authMode": "key", "traffic": {}, "router": {"replicas": 1}},
    "OnlineDeployment": {"endpointName": "fuzz", "model": "models:/no-such-model/1", "instanceCount": 1},
    "BatchJob": {
        "endpointName": "fuzz-batch",
        "input": {"uri": "s3://in/"},
        "output": {"uri": "s3://out/run"},
    },
}
FIELDS: dict[str, list[str]] = {
    "OnlineEndpoint": [
        "authMode", "traffic", "mirrorTraffic", "router.replicas", "router.resources.limits",
        "service.type", "unknownField",
    ],
    "OnlineDeployment": [
        "endpointName", "model", "instanceCount", "workers", "scaleSettings.type",
        "scaleSettings.minInstances", "scaleSettings.maxInstances", "requestSettings.requestTimeoutMs",
        "batching.maxBatchSize",
        "modelMountPath", "resources.requests", "env", "unknownField",
    ],
    "BatchJob": [
        "endpointName", "deploymentName", "input.uri", "output.uri", "settings.miniBatchSize",
        "settings.errorThreshold", "unknownField",
    ],
}  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=40),
    st.sampled_from(["", "x" * 3000, "s3://", "models:/m@", "/abs/path", "none", "key", "targetUtilization"]),
    st.lists(st.integers(min_value=-5, max_value=200), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=10), st.integers(min_value=-10, max_value=200), max_size=4),
)
CASES = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda kind: st.tuples(st.just(kind), st.sampled_from(FIELDS[kind]), VALUES)
)


def with_field(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def test_generated_resources_are_refused_naming_the_field_or_get_a_condition(
    kubectl: Kubectl, kube_cluster: Any, namespace: str
) -> None:
    api = client.CustomObjectsApi(kube_cluster.api_client)
    operator_before = operator_pod(kubectl)
    restarts_before = restarts(kubectl)
    started = time.time()
    names = (f"fz-{i}" for i in itertools.count())
    refused: list[tuple[str, str, str]] = []
    stored: list[tuple[str, str, str]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=CASES)
    def apply_one(case: tuple[str, str, Any]) -> None:
        kind, path, value = case
        name = next(names)
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": with_field(BASES[kind], path, value),
        }
        try:
            api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURALS[kind], body)
        except ApiException as exc:
            assert 400 <= exc.status < 500, f"{kind}.{path}={value!r}: {exc.status} {exc.body}"
            message = str(json.loads(exc.body or "{}").get("message", ""))
            field = path.split(".")[-1]
            # Structural schema errors name the full path; unknown fields are pruned, not refused.
            assert field in message or "spec" in message, f"{kind}.{path}={value!r}: {message}"
            refused.append((kind, path, message))
            return
        stored.append((kind, name, path))

    apply_one()
    assert refused and stored, (len(refused), len(stored))

    def described(kind: str, name: str) -> bool:
        obj: Any = api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURALS[kind], name)
        conditions = obj.get("status", {}).get("conditions") or []
        return any(c.get("status") == "False" and c.get("message") for c in conditions) or any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
        )

    for kind, name, path in stored:
        wait_for(f"a status for {kind}/{name} ({path})", functools.partial(described, kind, name), 120)
    assert operator_pod(kubectl) == operator_before and restarts(kubectl) == restarts_before, (
        "operator restarted"
    )
    since = f"--since={int(time.time() - started) + 5}s"
    log = kubectl.run("-n", OPERATOR_NAMESPACE, "logs", operator_before, since)
    assert "Traceback" not in log, log[-4000:]
    assert '"code":422' not in log.replace(" ", "") and "is invalid" not in log, (
        "an invalid child was written"
    )
    by_kind = dict(Counter(kind for kind, *_ in stored))
    print(f"\nfuzzed: {len(refused)} refused by the API server, {len(stored)} stored and described {by_kind}")


def restarts(kubectl: Kubectl) -> int:
    pods = kubectl.json("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", OPERATOR_PODS)
    return sum(
        s.get("restartCount", 0) for p in pods["items"] for s in p["status"].get("containerStatuses", [])
    )
