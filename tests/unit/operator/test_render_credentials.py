"""Operator-wide object-store credentials and image pull secrets, on every pod the operator renders."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from mlendpoints.api.batch import BatchDeployment, BatchJob
from mlendpoints.api.online import OnlineDeployment, OnlineEndpoint
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.render.batch import render_merge_job, render_score_jobs
from mlendpoints.render.common import (
    GCS_CREDENTIALS_DIR,
    GCS_CREDENTIALS_KEY,
    RenderSettings,
    with_default_resources,
)
from mlendpoints.render.deployment import ResolvedModel, render_deployment
from mlendpoints.render.discovery import MODERN
from mlendpoints.render.endpoint import effective_routing, render_endpoint, router_config
from mlendpoints.render.model_inputs import inject_model_inputs

EVERYTHING = RenderSettings(
    serving_image="serving:dev",
    serving_image_gpu="serving:dev-cuda",
    mlflow_credentials_secret="mlflow-creds",
    s3_credentials_secret="s3-creds",
    azure_credentials_secret="azure-creds",
    gcs_credentials_secret="gcs-key",
    image_pull_secrets=("regcred", "mirror"),
)
BARE = RenderSettings(serving_image="serving:dev", serving_image_gpu="serving:dev-cuda")
MODEL = ResolvedModel("models:/diabetes/1", "1")
GCS_KEY_FILE = f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_KEY}"


def _meta(kind: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "mlendpoints.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
    }


def online_pod(settings: RenderSettings) -> dict[str, Any]:
    dep = OnlineDeployment.model_validate(
        {**_meta("OnlineDeployment", "blue"), "spec": {"endpointName": "ep", "model": "s3://models/ridge"}}
    )
    [deployment] = [c for c in render_deployment(dep, MODEL, MODERN, settings) if c["kind"] == "Deployment"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def router_pod(settings: RenderSettings) -> dict[str, Any]:
    ep = OnlineEndpoint.model_validate({**_meta("OnlineEndpoint", "ep"), "spec": {}})
    config = router_config("ep", "ml", ep.spec, {}, effective_routing(ep.spec, {}, None))
    [deployment] = [c for c in render_endpoint(ep, config, MODERN, settings) if c["kind"] == "Deployment"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def batch_pods(settings: RenderSettings) -> list[dict[str, Any]]:
    dep = BatchDeployment.model_validate(
        {
            **_meta("BatchDeployment", "ridge"),
            "spec": {"endpointName": "scoring", "model": "models:/diabetes/1"},
        }
    )
    job = BatchJob.model_validate(
        {
            **_meta("BatchJob", "nightly"),
            "spec": {
                "endpointName": "scoring",
                "input": {"uri": "s3://in/"},
                "output": {"uri": "gs://out/run"},
            },
        }
    )
    jobs = [*render_score_jobs(job, dep, MODEL, settings), render_merge_job(job, dep, settings)]
    return [j["spec"]["template"]["spec"] for j in jobs]


def input_pod(settings: RenderSettings) -> dict[str, Any]:
    pod = {"metadata": {"name": "eval"}, "spec": {"containers": [{"name": "main", "image": "python:3.11"}]}}
    out: dict[str, Any] = inject_model_inputs(pod, {"model": "gs://bucket/model"}, settings)["spec"]
    return out


def store_containers(settings: RenderSettings) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod, container) for every container that fetches a model or reads and writes data."""
    out = []
    online = online_pod(settings)
    out += [("online", online, c) for c in online["initContainers"] + online["containers"]]
    for pod in batch_pods(settings):
        out += [("batch", pod, c) for c in pod.get("initContainers", []) + pod["containers"]]
    inputs = input_pod(settings)
    out += [("inputs", inputs, c) for c in inputs["initContainers"]]
    return out


def test_every_store_container_gets_each_secret_as_optional_env_from() -> None:
    for where, _, container in store_containers(EVERYTHING):
        refs = [e["secretRef"] for e in container["envFrom"]]
        assert refs == [
            {"name": "mlflow-creds", "optional": True},
            {"name": "s3-creds", "optional": True},
            {"name": "azure-creds", "optional": True},
        ], (where, container["name"])


def test_the_gcs_key_is_mounted_read_only_where_its_variable_points() -> None:
    for where, pod, container in store_containers(EVERYTHING):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == GCS_KEY_FILE, (where, container["name"])
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == GCS_CREDENTIALS_DIR]
        assert mount["readOnly"] is True
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"] == {"secretName": "gcs-key", "optional": True}


def test_no_credentials_settings_render_no_credentials() -> None:
    for where, pod, container in store_containers(BARE):
        assert not container.get("envFrom"), (where, container["name"])
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in {e["name"] for e in container.get("env", [])}
        assert all("secret" not in v for v in pod["volumes"]), where
        assert "imagePullSecrets" not in pod, where


def test_image_pull_secrets_on_every_pod_of_the_serving_image() -> None:
    pods = [online_pod(EVERYTHING), router_pod(EVERYTHING), *batch_pods(EVERYTHING)]
    for pod in pods:
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    # A user's pod with model inputs runs the user's image: its pull secrets stay the user's.
    assert "imagePullSecrets" not in input_pod(EVERYTHING)


def test_injecting_model_inputs_twice_keeps_one_credentials_volume() -> None:
    pod = {"metadata": {"name": "eval"}, "spec": {"containers": [{"name": "main", "image": "python:3.11"}]}}
    once = inject_model_inputs(pod, {"model": "gs://bucket/model"}, EVERYTHING)
    twice = inject_model_inputs(once, {"model": "gs://bucket/model"}, EVERYTHING)
    assert twice == once


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ("MLENDPOINTS_S3_CREDENTIALS_SECRET", "s3_credentials_secret", "s3-creds"),
        ("MLENDPOINTS_GCS_CREDENTIALS_SECRET", "gcs_credentials_secret", "gcs-key"),
        ("MLENDPOINTS_AZURE_CREDENTIALS_SECRET", "azure_credentials_secret", "azure-creds"),
        ("MLENDPOINTS_IMAGE_PULL_SECRETS", "image_pull_secrets", ("regcred", "mirror")),
    ],
)
def test_operator_settings_read_the_charts_variables(
    monkeypatch: pytest.MonkeyPatch, env: str, field: str, value: Any
) -> None:
    monkeypatch.setenv(env, '["regcred", "mirror"]' if isinstance(value, tuple) else value)
    assert getattr(OperatorSettings().render_settings(), field) == value


@pytest.mark.parametrize("kube_version", ["1.31.0", "1.37.0"])
@pytest.mark.parametrize("settings", [BARE, EVERYTHING], ids=["bare", "everything"])
def test_rendered_pods_are_valid_for_the_oldest_and_newest_supported_kubernetes(
    settings: RenderSettings, kube_version: str
) -> None:
    """The strict OpenAPI schemas of each release (kubernetes-validate, offline) accept every pod."""
    pods = [online_pod(settings), router_pod(settings), *batch_pods(settings), input_pod(settings)]
    for spec in pods:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
        kubernetes_validate.validate(pod, kube_version, strict=True)


def test_network_policy_admits_only_the_endpoints_routers_and_the_metrics_peers() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    settings = BARE.model_copy(update={"network_policies": True, "metrics_from": (monitoring,)})
    dep = OnlineDeployment.model_validate(
        {**_meta("OnlineDeployment", "blue"), "spec": {"endpointName": "ep", "model": "s3://models/ridge"}}
    )
    children = render_deployment(dep, MODEL, MODERN, settings)
    [policy] = [c for c in children if c["kind"] == "NetworkPolicy"]
    [server] = [c for c in children if c["kind"] == "Deployment"]
    router = router_pod_labels(settings)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == server["spec"]["template"]["metadata"]["labels"]
    assert spec["policyTypes"] == ["Ingress"]
    [from_routers, from_metrics] = spec["ingress"]
    [peer] = from_routers["from"]
    assert peer == {"podSelector": {"matchLabels": router}}  # same namespace, the endpoint's routers
    assert from_metrics["from"] == [monitoring]
    port = server["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert from_routers["ports"] == from_metrics["ports"] == [{"port": port, "protocol": "TCP"}]
    kubernetes_validate.validate(policy, "1.31.0", strict=True)
    # Off (local mode's settings, or the chart's opt-out): no policy at all.
    assert "NetworkPolicy" not in {c["kind"] for c in render_deployment(dep, MODEL, MODERN, BARE)}


def router_pod_labels(settings: RenderSettings) -> dict[str, str]:
    ep = OnlineEndpoint.model_validate({**_meta("OnlineEndpoint", "ep"), "spec": {}})
    config = router_config("ep", "ml", ep.spec, {}, effective_routing(ep.spec, {}, None))
    [deployment] = [c for c in render_endpoint(ep, config, MODERN, settings) if c["kind"] == "Deployment"]
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_operator_settings_turn_network_policies_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorSettings().render_settings().network_policies is True
    monkeypatch.setenv("MLENDPOINTS_NETWORK_POLICIES", "false")
    monkeypatch.setenv("MLENDPOINTS_METRICS_FROM", '[{"namespaceSelector": {}}]')
    settings = OperatorSettings().render_settings()
    assert settings.network_policies is False
    assert settings.metrics_from == ({"namespaceSelector": {}},)


def test_servers_and_routers_drain_gracefully() -> None:
    """A terminating pod keeps serving through the preStop sleep (its removal from the EndpointSlices
    reaches kube-proxy and the routers meanwhile), then has the longest request's time to finish."""
    dep = OnlineDeployment.model_validate(
        {
            **_meta("OnlineDeployment", "blue"),
            "spec": {"endpointName": "ep", "model": "s3://m", "requestSettings": {"requestTimeoutMs": 30500}},
        }
    )
    [deployment] = [c for c in render_deployment(dep, MODEL, MODERN, BARE) if c["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [server] = pod["containers"]
    assert server["lifecycle"] == {"preStop": {"sleep": {"seconds": BARE.prestop_seconds}}}
    assert pod["terminationGracePeriodSeconds"] == BARE.prestop_seconds + 31 + 5
    ep = OnlineEndpoint.model_validate({**_meta("OnlineEndpoint", "ep"), "spec": {"traffic": {"blue": 100}}})
    config = router_config(
        "ep", "ml", ep.spec, {"blue": dep.spec}, effective_routing(ep.spec, {"blue": dep.spec}, None)
    )
    [router_deployment] = [c for c in render_endpoint(ep, config, MODERN, BARE) if c["kind"] == "Deployment"]
    router = router_deployment["spec"]["template"]["spec"]
    assert router["containers"][0]["lifecycle"] == server["lifecycle"]
    # A fixed 60 s for in-flight requests and the collector's flush budget: not from the deployments,
    # whose coming and going must not roll the routers.
    assert router["terminationGracePeriodSeconds"] == BARE.prestop_seconds + 60 + 15 + 5
    config_without = router_config("ep", "ml", ep.spec, {}, effective_routing(ep.spec, {}, None))
    [bare_router] = [
        c for c in render_endpoint(ep, config_without, MODERN, BARE) if c["kind"] == "Deployment"
    ]
    assert bare_router["spec"]["template"] == router_deployment["spec"]["template"]


DEFAULTS = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({}, DEFAULTS),
        # The user's values win key by key; the others stay.
        (
            {"requests": {"cpu": "2"}, "limits": {"nvidia.com/gpu": "1"}},
            {"requests": {"cpu": "2", "memory": "256Mi"}, "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"}},
        ),
        # A user's limit below the default request lowers the request to it...
        (
            {"limits": {"memory": "128Mi"}},
            {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}},
        ),
        # ...and a user's request above the default limit raises the limit.
        (
            {"requests": {"memory": "8Gi"}},
            {"requests": {"cpu": "100m", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
        ),
    ],
)
def test_default_resources_fill_what_the_spec_leaves_unset(
    user: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert with_default_resources(user, DEFAULTS) == expected


def test_every_rendered_container_gets_requests_and_a_memory_limit_from_the_operator_defaults() -> None:
    settings = OperatorSettings().render_settings()
    pods = [online_pod(settings), router_pod(settings), *batch_pods(settings)]
    for pod in pods:
        for container in pod.get("initContainers", []) + pod["containers"]:
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], container["name"]
            assert resources["limits"]["memory"], container["name"]
    assert router_pod(settings)["containers"][0]["resources"] == settings.router_default_resources
    assert online_pod(settings)["containers"][0]["resources"] == settings.default_resources
