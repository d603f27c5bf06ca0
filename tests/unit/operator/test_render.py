"""Pure renderers: resources -> child objects, with the API versions of the supported clusters."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_settings import CliApp

from mlendpoints.api.online import OnlineDeployment, OnlineDeploymentSpec, OnlineEndpoint, OnlineEndpointSpec
from mlendpoints.render.common import CONFIG_HASH_ANNOTATION, RenderSettings
from mlendpoints.render.deployment import ResolvedModel, render_deployment
from mlendpoints.render.discovery import MODERN, ApiVersions, UnsupportedCluster
from mlendpoints.render.endpoint import effective_routing, render_endpoint, render_keys_secret, router_config
from mlendpoints_serving import contract
from mlendpoints_serving.server.settings import ServeSettings

SETTINGS = RenderSettings(
    serving_image="mlendpoints/serving:dev",
    serving_image_gpu="mlendpoints/serving:dev-cuda",
    mlflow_tracking_uri="http://172.17.0.1:5000",
    mlflow_credentials_secret="mlflow-credentials",
)
BOTH = pytest.mark.parametrize("versions", [MODERN], ids=["stable"])


def endpoint(**spec: Any) -> OnlineEndpoint:
    return OnlineEndpoint.model_validate(
        {
            "apiVersion": "mlendpoints.io/v1alpha1",
            "kind": "OnlineEndpoint",
            "metadata": {"name": "diabetes", "namespace": "ml", "uid": "uid-ep"},
            "spec": spec,
        }
    )


def deployment(name: str = "blue", **spec: Any) -> OnlineDeployment:
    return OnlineDeployment.model_validate(
        {
            "apiVersion": "mlendpoints.io/v1alpha1",
            "kind": "OnlineDeployment",
            "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
            "spec": {"endpointName": "diabetes", "model": "models:/diabetes@champion", **spec},
        }
    )


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {c["kind"]: c for c in children}
    assert len(out) == len(children), "one child per kind"
    return out


def test_discovery_needs_the_stable_versions() -> None:
    served = {"autoscaling/v1", "autoscaling/v2", "policy/v1", "discovery.k8s.io/v1", "batch/v1"}
    versions = ApiVersions.from_discovery(served, (1, 31))
    assert versions == MODERN
    assert (MODERN.autoscaling, MODERN.policy, MODERN.discovery) == (
        "autoscaling/v2",
        "policy/v1",
        "discovery.k8s.io/v1",
    )
    with pytest.raises(
        UnsupportedCluster, match=r"Kubernetes 1\.30, which lacks policy/v1: .*1\.31 or newer"
    ):
        ApiVersions.from_discovery(served - {"policy/v1"}, (1, 30))
    # Kubernetes 1.20 serves only the betas (and no Indexed Jobs).
    betas = {"autoscaling/v2beta2", "policy/v1beta1", "discovery.k8s.io/v1beta1"}
    with pytest.raises(UnsupportedCluster, match=r"Kubernetes 1\.20, which lacks autoscaling/v2, policy/v1"):
        ApiVersions.from_discovery(betas, (1, 20))
    with pytest.raises(UnsupportedCluster, match=r"Kubernetes 1\.30: .*1\.31 or newer"):
        ApiVersions.from_discovery(served, (1, 30))


def routed(ep: OnlineEndpoint, *deps: OnlineDeployment) -> contract.RouterConfig:
    specs = {d.metadata["name"]: d.spec for d in deps}
    return router_config("diabetes", "ml", ep.spec, specs, effective_routing(ep.spec, specs, None))


@BOTH
def test_endpoint_children(versions: ApiVersions) -> None:
    ep = endpoint(traffic={"blue": 100}, service={"type": "NodePort", "annotations": {"a": "b"}})
    config = routed(ep, deployment("blue"), deployment("green"))
    kinds = by_kind(render_endpoint(ep, config, versions, SETTINGS))
    assert list(kinds) == [
        "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget",
    ]  # fmt: skip
    for obj in kinds.values():
        assert obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "mlendpoints.io/v1alpha1",
                "kind": "OnlineEndpoint",
                "name": "diabetes",
                "uid": "uid-ep",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert obj["metadata"]["labels"][contract.LABEL_MANAGED_BY] == "mlendpoints"
        assert CONFIG_HASH_ANNOTATION in obj["metadata"]["annotations"]
    assert kinds["PodDisruptionBudget"]["apiVersion"] == versions.policy

    cm = kinds["ConfigMap"]
    assert cm["metadata"]["name"] == contract.router_configmap_name("diabetes")
    parsed = contract.RouterConfig.model_validate_json(cm["data"][contract.ROUTER_CONFIG_KEY])
    assert parsed.traffic == {"blue": 100}
    assert parsed.keysSecret == "diabetes-keys"
    assert parsed.modelErrors == "passthrough"  # a model's 4xx/5xx as it is, unless azureml is asked for
    assert routed(endpoint(traffic={"blue": 100}, modelErrors="azureml"), deployment("blue")).modelErrors == (
        "azureml"
    )
    assert parsed.deployments["green"].service == "green-server"
    assert parsed.deployments["green"].port == contract.SERVER_PORT

    service = kinds["Service"]
    assert service["metadata"]["name"] == "diabetes"
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["metadata"]["annotations"]["a"] == "b"

    router = kinds["Deployment"]
    assert router["spec"]["replicas"] == 2
    pod = router["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "diabetes-router"
    (container,) = pod["containers"]
    assert container["command"] + container["args"] == [
        "mlendpoints-router", "--configmap", "diabetes-router", "--namespace", "ml", "--port", "8080",
        "--admin-port", "8081",
    ]  # fmt: skip
    assert container["ports"][0]["containerPort"] == contract.ROUTER_PORT
    assert container["image"] == "mlendpoints/serving:dev"


def test_router_role_is_least_privilege() -> None:
    ep = endpoint()
    role = by_kind(render_endpoint(ep, routed(ep), MODERN, SETTINGS))["Role"]
    rules = {tuple(r["resources"]): r for r in role["rules"]}
    assert set(rules) == {("configmaps",), ("secrets",), ("endpointslices",)}
    assert rules[("configmaps",)]["resourceNames"] == ["diabetes-router"]
    assert rules[("secrets",)]["resourceNames"] == ["diabetes-keys"]
    assert rules[("endpointslices",)]["apiGroups"] == ["discovery.k8s.io"]
    assert all(r["verbs"] == ["get", "list", "watch"] for r in role["rules"])


def test_keys_secret_carries_both_keys() -> None:
    secret = render_keys_secret(endpoint(), "p" * 32, "s" * 32)
    assert secret["metadata"]["name"] == "diabetes-keys"
    assert secret["stringData"] == {
        contract.SECRET_PRIMARY_KEY: "p" * 32,
        contract.SECRET_SECONDARY_KEY: "s" * 32,
    }


def test_invalid_traffic_keeps_the_applied_split() -> None:
    deps = {"blue": deployment("blue").spec, "green": deployment("green").spec}
    routes = {"blue": contract.DeploymentRoute(), "green": contract.DeploymentRoute()}
    applied = contract.RouterConfig(endpoint="diabetes", traffic={"blue": 100}, deployments=routes)
    bad = OnlineEndpointSpec(traffic={"blue": 90, "green": 20})
    routing = effective_routing(bad, deps, applied)
    assert routing.traffic == {"blue": 100}
    assert routing.errors == ["spec.traffic: percentages sum to 110, must be 0 or 100"]
    assert effective_routing(bad, deps, None).traffic == {}
    missing = OnlineEndpointSpec(traffic={"red": 100})
    assert effective_routing(missing, deps, applied).errors == [
        "spec.traffic.red: no OnlineDeployment 'red' of this endpoint"
    ]
    # The applied split names a deployment that is gone: route nothing.
    assert effective_routing(bad, {"green": deps["green"]}, applied).traffic == {}
    good = OnlineEndpointSpec(traffic={"green": 10, "blue": 90}, mirrorTraffic={})
    assert effective_routing(good, deps, applied).traffic == {"blue": 90, "green": 10}


def test_config_hash_follows_the_content() -> None:
    ep1, ep2 = endpoint(traffic={"blue": 100}), endpoint(traffic={"blue": 100})
    dep = deployment("blue")
    first = render_endpoint(ep1, routed(ep1, dep), MODERN, SETTINGS)
    again = render_endpoint(ep2, routed(ep2, dep), MODERN, SETTINGS)
    assert first == again
    ep3 = endpoint(traffic={"blue": 100}, router={"replicas": 3})
    changed = render_endpoint(ep3, routed(ep3, dep), MODERN, SETTINGS)
    hashes = [
        (
            a["kind"],
            a["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
            == b["metadata"]["annotations"][CONFIG_HASH_ANNOTATION],
        )
        for a, b in zip(first, changed, strict=True)
    ]
    assert ("Deployment", False) in hashes and ("ConfigMap", True) in hashes


PINNED = ResolvedModel("models:/diabetes/1", "1")


@BOTH
def test_deployment_children_default_scaling(versions: ApiVersions) -> None:
    kinds = by_kind(render_deployment(deployment("blue"), PINNED, versions, SETTINGS))
    assert set(kinds) == {"Deployment", "Service"}  # one instance: no PDB, no HPA
    dep = kinds["Deployment"]
    assert dep["metadata"]["name"] == "blue-server"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"]["mlendpoints.io/model-version"] == "1"
    pod = template["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["command"] + fetch["args"] == [
        "mlendpoints-fetch", "--model-uri", "models:/diabetes/1", "--dest", "/var/mlendpoints/model",
    ]  # fmt: skip
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://172.17.0.1:5000"} in fetch["env"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "mlflow-credentials", "optional": True}}]
    (server,) = pod["containers"]
    assert server["command"] + server["args"] == [
        "mlendpoints-serve", "--model-dir", "/var/mlendpoints/model", "--port", "5001",
        "--request-timeout-ms", "5000", "--env-manager", "local",
    ]  # fmt: skip
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["livenessProbe"]["httpGet"]["path"] == "/"
    assert server["livenessProbe"]["failureThreshold"] == 30
    assert server["startupProbe"]["httpGet"]["path"] == "/health"
    for container in (fetch, server):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert {"name": "model", "mountPath": "/var/mlendpoints/model"} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    service = kinds["Service"]
    assert service["spec"]["ports"][0]["port"] == contract.SERVER_PORT
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"][contract.LABEL_DEPLOYMENT] == "blue"


@BOTH
def test_deployment_autoscaling_renders_hpa(versions: ApiVersions) -> None:
    dep = deployment(
        "green",
        scaleSettings={
            "type": "targetUtilization",
            "minInstances": 2,
            "maxInstances": 5,
            "pollingInterval": 15,
        },
        resources={"requests": {"cpu": "500m"}},
    )
    kinds = by_kind(render_deployment(dep, PINNED, versions, SETTINGS))
    assert set(kinds) == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    assert "replicas" not in kinds["Deployment"]["spec"]  # the HPA owns it
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == versions.autoscaling
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "green-server",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["periodSeconds"] == 15
    # Up at once; down after the HPA's own default window (stableWindowSeconds unset).
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert kinds["PodDisruptionBudget"]["apiVersion"] == versions.policy


@BOTH
def test_hpa_scale_down_window_is_stable_window_seconds(versions: ApiVersions) -> None:
    dep = deployment(
        "green",
        scaleSettings={
            "type": "targetUtilization",
            "minInstances": 1,
            "maxInstances": 3,
            "targetUtilizationPercentage": 50,
            "pollingInterval": 1,
            "stableWindowSeconds": 15,
        },
        resources={"requests": {"cpu": "50m"}},
    )
    hpa = by_kind(render_deployment(dep, PINNED, versions, SETTINGS))["HorizontalPodAutoscaler"]
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 15
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["policies"] == [{"type": "Percent", "value": 100, "periodSeconds": 1}]
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 50


def test_deployment_options_reach_the_pod() -> None:
    dep = deployment(
        "gpu",
        instanceCount=3,
        resources={"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}},
        codeConfiguration={"configMap": "score-code", "scoringScript": "score.py", "modelFolder": "model"},
        batching={"maxBatchSize": 32, "maxBatchTimeMs": 4},
        workers=2,
        envManager="virtualenv",
        env=[
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        nodeSelector={"gpu": "yes"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
        },
        serviceAccountName="scorer",
    )
    kinds = by_kind(render_deployment(dep, ResolvedModel("s3://bucket/model"), MODERN, SETTINGS))
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    deploy = kinds["Deployment"]
    assert deploy["spec"]["replicas"] == 3
    assert "mlendpoints.io/model-version" not in deploy["spec"]["template"]["metadata"]["annotations"]
    pod = deploy["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"] == "mlendpoints/serving:dev-cuda"
    assert server["resources"] == {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}, "requests": {}}
    assert server["args"][-14:] == [
        "--env-manager", "virtualenv", "--workers", "2", "--batching", "on", "--max-batch-size", "32",
        "--max-batch-time-ms", "4", "--scoring-script", "/var/mlendpoints/code/score.py",
        "--azureml-model-dir", "/var/mlendpoints/model",
    ]  # fmt: skip
    # Azure's layout (modelFolder): the model is fetched into a folder of the mount, which the script
    # gets as AZUREML_MODEL_DIR; the server's own flag parser takes what was rendered.
    flags = CliApp.run(ServeSettings, cli_args=server["args"])
    assert (str(flags.model_dir), str(flags.azureml_model_dir)) == (
        "/var/mlendpoints/model/model",
        "/var/mlendpoints/model",
    )
    assert pod["initContainers"][0]["args"][-2:] == ["--dest", "/var/mlendpoints/model/model"]
    assert {"name": "MLENDPOINTS_MODEL_DIR", "value": "/var/mlendpoints/model/model"} in server["env"]
    assert {"name": "A", "value": "1"} in server["env"]
    assert {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}} in server["env"]
    assert {"name": "code", "configMap": {"name": "score-code"}} in pod["volumes"]
    assert pod["nodeSelector"] == {"gpu": "yes"}
    assert pod["tolerations"] == [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert "nodeAffinity" in pod["affinity"]
    assert pod["serviceAccountName"] == "scorer" and "automountServiceAccountToken" not in pod
    explicit = deployment("img", image="me/custom:1", resources={"limits": {"nvidia.com/gpu": 1}})
    assert (
        by_kind(render_deployment(explicit, PINNED, MODERN, SETTINGS))["Deployment"]["spec"]["template"][
            "spec"
        ]["containers"][0]["image"]
        == "me/custom:1"
    )


def test_the_batching_switch_reaches_the_server() -> None:
    def args(**spec: Any) -> list[str]:
        kinds = by_kind(render_deployment(deployment("blue", **spec), PINNED, MODERN, SETTINGS))
        return list(kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "--batching" not in args()  # the server's default: on for row-independent models
    assert args(batching={"enabled": False})[-2:] == ["--batching", "off"]
    assert "--max-batch-size" not in args(batching={"enabled": False})
    assert args(batching={})[-6:] == [
        "--batching", "on", "--max-batch-size", "32", "--max-batch-time-ms", "0",
    ]  # fmt: skip


def test_spec_defaults_survive_rendering() -> None:
    spec = OnlineDeploymentSpec(endpointName="diabetes", model="models:/m/1")
    assert spec.modelMountPath == "/var/mlendpoints/model"
