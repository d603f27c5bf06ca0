"""End to end on the local cluster: the operator running from its image, the serving pods really serving.

apply -> children -> Ready; a traffic change reaches the router; invalid resources are refused with the
field named; a hand-deleted child comes back; a restart makes 0 writes; a failing model load shows its
reason; deleting the endpoint cascades.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.operator_deploy import ROOT, Kubectl, operator_metric, operator_pod, operator_samples, wait_for

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

READY_TIMEOUT = 240
API = "mlendpoints.io/v1alpha1"


def endpoint(name: str, traffic: dict[str, int], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "OnlineEndpoint",
        "metadata": {"name": name},
        "spec": {"traffic": traffic, "router": {"replicas": 1}, **spec},
    }


def deployment(name: str, endpoint_name: str, model: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "OnlineDeployment",
        "metadata": {"name": name},
        "spec": {
            "endpointName": endpoint_name,
            "model": model,
            "workers": 1,
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            **spec,
        },
    }


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def wait_ready(kubectl: Kubectl, kind: str, name: str, namespace: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = kubectl.get(kind, name, namespace)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    try:
        return dict(wait_for(f"{kind}/{name} Ready", ready, READY_TIMEOUT, interval=1))
    except TimeoutError:
        print(kubectl.try_run("-n", namespace, "get", "all,oe,od", "-o", "wide").stdout)
        print(json.dumps((kubectl.get(kind, name, namespace) or {}).get("status"), indent=1))
        raise


def score(kubectl: Kubectl, namespace: str, endpoint_name: str) -> tuple[int, str]:
    """POST a diabetes row to the endpoint's Service (ClusterIP, reachable from the node).

    Returns the HTTP status and the deployment that answered."""
    service = kubectl.json("-n", namespace, "get", "service", endpoint_name)
    secret = kubectl.json("-n", namespace, "get", "secret", f"{endpoint_name}-keys")
    key = base64.b64decode(secret["data"]["primaryKey"]).decode()
    row = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)
    request = urllib.request.Request(
        f"http://{service['spec']['clusterIP']}/score",
        data=json.dumps({"input_data": [row]}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers.get("x-mlendpoints-served-by", "")
    except OSError as exc:
        return getattr(exc, "code", 0), ""


@pytest.fixture
def blue_green(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    kubectl.apply(
        [
            endpoint("diabetes", {"blue": 100}),
            deployment("blue", "diabetes", "models:/diabetes@champion"),
            deployment("green", "diabetes", "models:/diabetes/2"),
        ],
        namespace,
    )
    yield namespace


def test_apply_creates_children_and_becomes_ready_then_traffic_moves(
    kubectl: Kubectl, blue_green: str
) -> None:
    ns = blue_green
    ep = wait_ready(kubectl, "onlineendpoint", "diabetes", ns)
    status = ep["status"]
    assert status["scoringUri"] == f"http://diabetes.{ns}.svc.cluster.local/score"
    assert status["provisioningState"] == "Succeeded"
    assert status["traffic"] == {"blue": 100}
    blue = wait_ready(kubectl, "onlinedeployment", "blue", ns)
    assert blue["status"]["resolvedModelVersion"] == "1"  # the champion alias, pinned
    assert condition(blue, "ModelResolved")["status"] == "True"
    for kind, name in [
        ("secret", "diabetes-keys"),
        ("configmap", "diabetes-router"),
        ("serviceaccount", "diabetes-router"),
        ("role", "diabetes-router"),
        ("rolebinding", "diabetes-router"),
        ("deployment", "diabetes-router"),
        ("service", "diabetes"),
        ("poddisruptionbudget", "diabetes-router"),
        ("deployment", "blue-server"),
        ("service", "blue-server"),
        ("networkpolicy", "blue-server"),  # the model servers answer the routers only
        ("deployment", "green-server"),
    ]:
        assert kubectl.get(kind, name, ns) is not None, f"{kind}/{name} missing"
    pod_template = kubectl.json("-n", ns, "get", "deployment", "blue-server")["spec"]["template"]
    assert pod_template["spec"]["initContainers"][0]["args"][1] == "models:/diabetes/1"

    wait_for("a scored request", lambda: score(kubectl, ns, "diabetes") == (200, "blue"), 60, interval=1)
    wait_ready(kubectl, "onlinedeployment", "green", ns)
    kubectl.run(
        "-n",
        ns,
        "patch",
        "onlineendpoint",
        "diabetes",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"traffic": {"blue": 0, "green": 100}}}),
    )
    started = time.monotonic()
    wait_for("the router serving green", lambda: score(kubectl, ns, "diabetes") == (200, "green"), 30, 0.2)
    print(f"traffic change reached the router in {time.monotonic() - started:.2f}s")


def test_invalid_resources_are_refused_with_the_field_named(kubectl: Kubectl, blue_green: str) -> None:
    ns = blue_green
    # One object alone: the CRD's CEL rule, in the API server.
    bad = endpoint("diabetes", {"blue": 90, "green": 20})
    proc = kubectl.try_run("-n", ns, "apply", "-f", "-", stdin=json.dumps(bad))
    assert proc.returncode != 0
    # (1.31 writes `Invalid value: "object": ...`, 1.37 leaves the "object" out.)
    assert "spec.traffic: Invalid value" in proc.stderr
    assert "percentages sum to 110, must be 0 or 100" in proc.stderr
    # Other objects: the webhook.
    missing = endpoint("diabetes", {"blue": 50, "purple": 50})
    proc = kubectl.try_run("-n", ns, "apply", "-f", "-", stdin=json.dumps(missing))
    assert proc.returncode != 0
    assert "spec.traffic.purple: no OnlineDeployment 'purple' of this endpoint" in proc.stderr
    proc = kubectl.try_run(
        "-n", ns, "apply", "-f", "-", stdin=json.dumps(deployment("red", "diabetes", "models:/diabetes"))
    )
    assert proc.returncode != 0 and "spec.model: Invalid value" in proc.stderr
    assert "'models:/diabetes' is not a registry URI" in proc.stderr
    proc = kubectl.try_run("-n", ns, "delete", "onlinedeployment", "blue", "--wait=false")
    assert (
        proc.returncode != 0 and "spec.traffic.blue: the endpoint sends 100% of live traffic" in proc.stderr
    )
    # The structural schema refuses what it can express, naming the field too.
    proc = kubectl.try_run(
        "-n", ns, "apply", "-f", "-", stdin=json.dumps(endpoint("x", {}, authMode="aml_token"))
    )
    assert proc.returncode != 0 and "spec.authMode" in proc.stderr


def test_hand_deleted_children_come_back_and_restart_writes_nothing(
    kubectl: Kubectl, blue_green: str
) -> None:
    ns = blue_green
    wait_ready(kubectl, "onlineendpoint", "diabetes", ns)
    kubectl.run("-n", ns, "delete", "configmap", "diabetes-router")
    kubectl.run("-n", ns, "delete", "service", "blue-server")
    wait_for("the router ConfigMap back", lambda: kubectl.get("configmap", "diabetes-router", ns), 30)
    wait_for("the blue Service back", lambda: kubectl.get("service", "blue-server", ns), 30)
    # At rest first: the endpoint is Ready once blue is, while green (no traffic) may still be starting,
    # and its status moving then is a change the new operator must write.
    for name in ("blue", "green"):
        wait_ready(kubectl, "onlinedeployment", name, ns)
    wait_ready(kubectl, "onlineendpoint", "diabetes", ns)

    def unchanged_for_5s() -> dict[str, str] | None:
        first = snapshot(kubectl, ns)
        time.sleep(5)
        return first if snapshot(kubectl, ns) == first else None

    # Earlier tests' namespaces still being deleted are not at rest either: the operator sees their
    # resources go (and writes nothing for them: their namespace is terminating).
    wait_for("earlier tests' namespaces gone", lambda: not terminating_namespaces(kubectl), 180)
    before = wait_for("the namespace at rest", unchanged_for_5s, 120, interval=0)
    old_pod = operator_pod(kubectl)
    kubectl.run("-n", "mlendpoints-system", "delete", "pod", old_pod)
    new_pod = wait_for("a new operator pod", lambda: (p := operator_pod(kubectl)) != old_pod and p, 120)
    wait_for(
        "its first reconciles",
        lambda: operator_metric(kubectl, new_pod, "mlendpoints_operator_reconciles_total") >= 3,
        60,
    )
    time.sleep(10)
    writes = operator_samples(kubectl, new_pod, "mlendpoints_operator_api_writes_total")
    assert sum(writes.values()) == 0, writes
    assert snapshot(kubectl, ns) == before


def terminating_namespaces(kubectl: Kubectl) -> list[str]:
    items = kubectl.json("get", "namespaces")["items"]
    return [n["metadata"]["name"] for n in items if n["status"].get("phase") == "Terminating"]


def snapshot(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """resourceVersion of each object the operator writes (generation of Deployments: their status moves)."""
    out = {}
    kinds = "onlineendpoints,onlinedeployments,configmaps,secrets,services,serviceaccounts,roles,rolebindings"
    for obj in kubectl.json("-n", namespace, "get", kinds)["items"]:
        out[f"{obj['kind']}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    for obj in kubectl.json("-n", namespace, "get", "deployments")["items"]:
        out[f"Deployment/{obj['metadata']['name']}"] = str(obj["metadata"]["generation"])
    return out


def test_failing_model_load_shows_its_reason(
    kubectl: Kubectl, namespace: str, mlflow_server: Any, tmp_path: Path
) -> None:
    register_model_needing_xgboost(mlflow_server.url, tmp_path)
    kubectl.apply(
        [endpoint("broken", {"xgb": 100}), deployment("xgb", "broken", "models:/needs-xgboost/1")], namespace
    )

    def degraded() -> str:
        cond = condition(kubectl.get("onlinedeployment", "xgb", namespace), "Degraded")
        return str(cond.get("message", "")) if cond.get("status") == "True" else ""

    message = wait_for("a Degraded condition", degraded, READY_TIMEOUT, interval=1)
    assert "No module named 'xgboost'" in message
    ep = kubectl.get("onlineendpoint", "broken", namespace)
    assert condition(ep, "Ready")["status"] == "False"


def register_model_needing_xgboost(tracking_uri: str, root: Path) -> None:
    """An MLflow model whose flavor needs xgboost, which the serving image does not have."""
    import mlflow

    model = root / "model"
    model.mkdir()
    (model / "model.xgb").write_bytes(b"not really a model")
    (model / "MLmodel").write_text(
        "flavors:\n"
        "  python_function:\n"
        "    loader_module: mlflow.xgboost\n"
        "    data: model.xgb\n"
        "    python_version: 3.11.7\n"
        "  xgboost:\n"
        "    data: model.xgb\n"
        "    model_class: xgboost.sklearn.XGBRegressor\n"
        "    xgb_version: 2.0.3\n"
        f"mlflow_version: {mlflow.__version__}\n"
    )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("mlendpoints-e2e")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model), artifact_path="model")
    mlflow.register_model(f"runs:/{run.info.run_id}/model", "needs-xgboost")


def test_deleting_the_endpoint_cascades(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply([endpoint("gone", {}), deployment("gone-a", "gone", "models:/diabetes/1")], namespace)
    wait_for(
        "the deployment adopted",
        lambda: (
            (kubectl.get("onlinedeployment", "gone-a", namespace) or {})
            .get("metadata", {})
            .get("ownerReferences")
        ),
        60,
    )
    wait_for("the children", lambda: kubectl.get("deployment", "gone-a-server", namespace), 60)
    kubectl.run("-n", namespace, "delete", "onlineendpoint", "gone")
    for kind, name in [
        ("onlinedeployment", "gone-a"),
        ("deployment", "gone-a-server"),
        ("deployment", "gone-router"),
        ("service", "gone"),
        ("configmap", "gone-router"),
        ("secret", "gone-keys"),
    ]:

        def gone(k: str = kind, n: str = name) -> bool:
            return kubectl.get(k, n, namespace) is None

        wait_for(f"{kind}/{name} gone", gone, 90)


def test_example_applies_cleanly(kubectl: Kubectl, namespace: str) -> None:
    proc = kubectl.try_run(
        "-n", namespace, "apply", "--dry-run=server", "-f", str(ROOT / "examples/diabetes-online")
    )
    assert proc.returncode == 0, proc.stderr
    assert "onlineendpoint.mlendpoints.io/diabetes created (server dry run)" in proc.stdout


def test_keys_and_bearer_tokens_never_reach_any_log(
    kubectl: Kubectl, blue_green: str, redeploy_operator: Any
) -> None:
    """Secrets hygiene: after a scenario (scores with the key, a wrong key refused, the secondary key
    regenerated) with the operator at debug level, no component's log holds a key or a token."""
    ns = blue_green
    redeploy_operator({"logLevel": "debug"})
    try:
        wait_ready(kubectl, "onlineendpoint", "diabetes", ns)
        wait_for("a scored request", lambda: score(kubectl, ns, "diabetes")[0] == 200, 60, interval=1)
        service = kubectl.json("-n", ns, "get", "service", "diabetes")
        wrong = "not-the-key-" + "x" * 32
        request = urllib.request.Request(
            f"http://{service['spec']['clusterIP']}/score",
            data=b'{"input_data": [[0.01]]}',
            headers={"Authorization": f"Bearer {wrong}", "Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("a wrong key was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        old = kubectl.json("-n", ns, "get", "secret", "diabetes-keys")["data"]
        new_secondary = base64.b64encode(b"s" * 43).decode()
        patch = json.dumps({"data": {"secondaryKey": new_secondary}})
        kubectl.run("-n", ns, "patch", "secret", "diabetes-keys", "--type", "merge", "-p", patch)
        time.sleep(3)  # the routers pick the new key up, and would log it if they logged keys
        keys = {base64.b64decode(v).decode() for v in old.values()} | {"s" * 43, wrong}
        token = kubectl.run("-n", ns, "create", "token", "default").strip()
        logs = {}
        pods = kubectl.json("-n", ns, "get", "pods")["items"]
        pods += kubectl.json("-n", "mlendpoints-system", "get", "pods")["items"]
        for pod in pods:
            meta, spec = pod["metadata"], pod["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                where = f"{meta['namespace']}/{meta['name']}/{container['name']}"
                logs[where] = kubectl.run(
                    "-n", meta["namespace"], "logs", meta["name"], "-c", container["name"]
                )
        assert any("operator" in where for where in logs) and any("router" in where for where in logs)
        assert any('"msg":"listening"' in text for text in logs.values()), "the logs were read"
        for where, text in logs.items():
            for secret in keys:
                assert secret not in text, f"a key in the log of {where}"
            assert token[-40:] not in text, f"a bearer token in the log of {where}"
            assert "Bearer " not in text, f"an Authorization header in the log of {where}"
    finally:
        redeploy_operator()
