"""dataCollector in the control plane: the API's rules, the router config and pods it renders, the
DataCollectorReady condition from the router pods' reports, through the reconciler and its fake API."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from mlendpoints.api.online import OnlineDeploymentSpec
from mlendpoints.api.validation import validate_deployment
from mlendpoints.operator.online import DEPLOYMENT, ENDPOINT, owner_of
from mlendpoints.operator.status import collector_condition
from mlendpoints.render.common import RenderSettings
from mlendpoints.render.discovery import MODERN
from mlendpoints.render.endpoint import collecting, effective_routing, render_endpoint, router_config
from mlendpoints_serving import contract
from tests.unit.operator.test_online_reconciler import NAMESPACE, Cluster
from tests.unit.operator.test_render import deployment, endpoint

SETTINGS = RenderSettings(
    serving_image="mlendpoints/serving:dev",
    serving_image_gpu="mlendpoints/serving:dev-cuda",
    s3_credentials_secret="s3-defaults",
)
NOW = dt.datetime(2026, 12, 2, 14, 0, tzinfo=dt.UTC)


def health(ok: bool, error: str | None = None, at: dt.datetime = NOW, dropped: int = 0) -> str:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return contract.CollectorHealth(ok=ok, error=error, at=stamp, dropped=dropped).model_dump_json()


def spec(**collector: Any) -> OnlineDeploymentSpec:
    return OnlineDeploymentSpec.model_validate(
        {"endpointName": "diabetes", "model": "/mnt/m", "dataCollector": collector}
    )


# --- API -------------------------------------------------------------------------------------------
def test_defaults_follow_azure_meaning() -> None:
    collector = spec(destination="s3://bucket/records").dataCollector
    assert collector is not None and collector.enabled
    assert collector.collections.request.enabled and collector.collections.response.enabled
    assert (collector.samplingRate, collector.rolling, collector.headers) == (1.0, "hour", [])


@pytest.mark.parametrize(
    "field,value",
    [("samplingRate", 1.5), ("samplingRate", -0.1), ("rolling", "minute"), ("maxBodyBytes", -1),
     ("destination", "ftp://host/x"), ("destination", "relative/path"), ("headers", ["bad header"])],
)  # fmt: skip
def test_out_of_range_values_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        spec(**{"destination": "s3://b/r", field: value})
    assert field in str(refused.value)


def test_authorization_is_refused_by_validation_and_the_cel_rule() -> None:
    errors = validate_deployment("blue", spec(destination="/records", headers=["X-Trace", "Authorization"]))
    assert errors == ["spec.dataCollector.headers: Authorization is never collected; remove it"]
    schema = OnlineDeploymentSpec.model_json_schema()
    headers = schema["$defs"]["DataCollector"]["properties"]["headers"]
    assert "authorization" in headers["x-kubernetes-validations"][0]["rule"]


# --- rendering ------------------------------------------------------------------------------------
def rendered() -> tuple[contract.RouterConfig, dict[str, Any], list[dict[str, Any]]]:
    ep = endpoint(traffic={"blue": 100}, mirrorTraffic={"shadow": 20})
    blue = deployment(
        "blue",
        dataCollector={
            "destination": "s3://bucket/records",
            "credentialsSecret": "records-s3",
            "samplingRate": 0.25,
            "maxBodyBytes": 1000,
            "headers": ["X-Trace"],
            "collections": {"request": {"enabled": False}},
        },
    )
    shadow = deployment("shadow", dataCollector={"destination": "pvc://records-claim/online"})
    plain = deployment("green")
    specs = {d.metadata["name"]: d.spec for d in (blue, shadow, plain)}
    config = router_config(
        "diabetes", "ml", ep.spec, specs, effective_routing(ep.spec, specs, None), {"blue": "3"}
    )
    children = render_endpoint(ep, config, MODERN, SETTINGS, collecting(specs))
    router = next(c for c in children if c["kind"] == "Deployment")
    return config, router, children


def test_router_config_carries_each_collector_and_the_model_version() -> None:
    config, _, _ = rendered()
    blue = config.deployments["blue"]
    assert blue.modelVersion == "3"
    assert blue.collector == contract.CollectorRoute(
        destination="s3://bucket/records", request=False, response=True, samplingRate=0.25,
        rolling="hour", maxBodyBytes=1000, headers=["x-trace"],
    )  # fmt: skip
    shadow = config.deployments["shadow"].collector
    assert shadow is not None and shadow.destination == "/var/mlendpoints/collector/records-claim/online"
    assert config.deployments["green"].collector is None


def test_router_pods_get_credentials_pod_name_and_the_claim() -> None:
    _, router, _ = rendered()
    pod = router["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "MLENDPOINTS_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    assert container["envFrom"] == [
        {"secretRef": {"name": "s3-defaults", "optional": True}},
        {"secretRef": {"name": "records-s3"}},
    ]
    assert pod["volumes"] == [
        {"name": "collector-0", "persistentVolumeClaim": {"claimName": "records-claim"}}
    ]
    assert container["volumeMounts"] == [
        {"name": "collector-0", "mountPath": "/var/mlendpoints/collector/records-claim"}
    ]


def test_status_configmaps_reconcile_their_deployment_and_routers_may_patch_only_them() -> None:
    _, _, children = rendered()
    maps = [c for c in children if c["kind"] == "ConfigMap" and c["metadata"]["name"].endswith("-collector")]
    assert [m["metadata"]["name"] for m in maps] == ["blue-collector", "shadow-collector"]
    assert all("data" not in m for m in maps)  # the routers' keys are never overwritten
    assert owner_of(maps[0]["metadata"]["labels"]) == (DEPLOYMENT, "blue")
    role = next(c for c in children if c["kind"] == "Role")
    rule = role["rules"][-1]
    assert rule == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["blue-collector", "shadow-collector"],
        "verbs": ["get", "patch"],
    }


def test_without_a_collector_the_router_is_rendered_as_before() -> None:
    ep = endpoint(traffic={"blue": 100})
    specs = {"blue": deployment("blue").spec}
    config = router_config("diabetes", "ml", ep.spec, specs, effective_routing(ep.spec, specs, None))
    children = render_endpoint(ep, config, MODERN, SETTINGS, collecting(specs))
    router = next(c for c in children if c["kind"] == "Deployment")
    container = router["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container and "envFrom" not in container
    assert len(children) == 7


# --- condition --------------------------------------------------------------------------------------
def test_condition_unknown_before_any_report() -> None:
    cond = collector_condition({}, NOW, 4)
    assert (cond.status, cond.reason, cond.observedGeneration) == ("Unknown", "NoRecordsYet", 4)


def test_condition_names_the_pod_and_the_error_of_a_recent_failure() -> None:
    error = "s3://nope/r: FileNotFoundError: The specified bucket does not exist"
    reports = {"router-a": health(True), "router-b": health(False, error, dropped=12)}
    cond = collector_condition(reports, NOW)
    assert (cond.status, cond.reason) == ("False", "DestinationFailed")
    assert cond.message == f"router pod router-b: {error} (records dropped: 12)"


def test_an_old_failure_does_not_outweigh_recent_success() -> None:
    old = NOW - dt.timedelta(hours=1)
    reports = {"gone-pod": health(False, "boom", at=old), "router-a": health(True), "junk": "not json"}
    assert collector_condition(reports, NOW).status == "True"
    # With nothing recent, the latest report stands.
    assert collector_condition({"gone-pod": health(False, "boom", at=old)}, NOW).status == "False"


def test_reconciler_turns_the_router_reports_into_the_condition(tmp_path: Any) -> None:
    cluster = Cluster(f"sqlite:///{tmp_path}/mlflow.db")
    collector = {"destination": "s3://bucket/records"}
    cluster.add(ENDPOINT, "diabetes", {"traffic": {"blue": 100}})
    cluster.add(
        DEPLOYMENT, "blue", {"endpointName": "diabetes", "model": "/mnt/m", "dataCollector": collector}
    )
    cluster.reconcile(DEPLOYMENT, "blue")
    cluster.reconcile(ENDPOINT, "diabetes")
    assert cluster.condition(DEPLOYMENT, "blue", "DataCollectorReady")[:2] == ("Unknown", "NoRecordsYet")
    status_map = cluster.kube.peek("ConfigMap", NAMESPACE, "blue-collector")
    assert status_map is not None
    config = json.loads(cluster.kube.peek("ConfigMap", NAMESPACE, "diabetes-router")["data"]["router.json"])
    assert config["deployments"]["blue"]["collector"]["destination"] == "s3://bucket/records"

    # A router pod reports a failure (as its merge patch would): the condition names it.
    now = dt.datetime.now(dt.UTC)
    cluster.kube.put({**status_map, "data": {"router-x": health(False, "NoCredentialsError: none", at=now)}})
    cluster.reconcile(DEPLOYMENT, "blue")
    status, reason, message = cluster.condition(DEPLOYMENT, "blue", "DataCollectorReady")
    assert (status, reason) == ("False", "DestinationFailed") and "NoCredentialsError" in message
    # The operator's next pass over the endpoint keeps the routers' report.
    cluster.reconcile(ENDPOINT, "diabetes")
    assert "router-x" in cluster.kube.peek("ConfigMap", NAMESPACE, "blue-collector")["data"]
