"""The API models, the generated CRDs and the validation rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlendpoints.api import crdgen
from mlendpoints.api.kinds import KINDS
from mlendpoints.api.online import OnlineDeploymentSpec, OnlineEndpointSpec
from mlendpoints.api.validation import (
    parse_model_uri,
    parse_spec,
    validate_deployment,
    validate_deployment_delete,
    validate_endpoint,
    validate_model_uri,
)

ROOT = Path(__file__).resolve().parents[3]


# `make crds` writes both: crds/ for `kubectl apply` (Helm never upgrades a chart's CRDs) and the
# chart's crds/, which `helm install` applies.
@pytest.mark.parametrize("folder", ["crds", "charts/mlendpoints/crds"])
def test_committed_crds_match_the_models(folder: str) -> None:
    expected = crdgen.render_all()
    on_disk = {p.name: p.read_text() for p in (ROOT / folder).glob("*.yaml")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, f"{folder}/ drifted from the models ({stale or extra}): run `make crds`"


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += _walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        nodes += _walk(schema["items"], f"{path}[]")
    return nodes


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_schema_is_structural_and_described(kind: Any) -> None:
    crd = crdgen.crd(kind)
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["mlendpoints"]
    assert len(crd["spec"]["names"]["shortNames"]) == 1
    for path, node in _walk(version["schema"]["openAPIV3Schema"], "$"):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title"} & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if path not in ("$", "$.metadata") and not path.endswith(("*", "[]")):  # fields, not map values/items
            assert "description" in node, f"{path} has no description"


def test_crd_schema_carries_defaults_and_bounds() -> None:
    schema = crdgen.openapi_schema(KINDS[1])["properties"]["spec"]
    probe = schema["properties"]["livenessProbe"]
    assert probe["default"] == {}
    assert probe["properties"]["failureThreshold"]["default"] == 30
    assert schema["properties"]["requestSettings"]["properties"]["requestTimeoutMs"]["default"] == 5000
    assert schema["properties"]["envManager"]["enum"] == ["local", "virtualenv"]
    assert schema["required"] == ["endpointName", "model"]
    mirror = crdgen.openapi_schema(KINDS[0])["properties"]["spec"]["properties"]["mirrorTraffic"]
    assert mirror["maxProperties"] == 1
    assert (mirror["additionalProperties"]["minimum"], mirror["additionalProperties"]["maximum"]) == (1, 50)
    quantity = schema["properties"]["resources"]["properties"]["limits"]["additionalProperties"]
    assert quantity["x-kubernetes-int-or-string"] is True


def test_crdgen_writes_every_outdir(tmp_path: Path) -> None:
    assert crdgen.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    for outdir in ("a", "b"):
        docs = [yaml.safe_load(p.read_text()) for p in sorted((tmp_path / outdir).glob("*.yaml"))]
        ours = [d for d in docs if d["spec"]["group"] == "mlendpoints.io"]
        assert sorted(d["spec"]["names"]["shortNames"][0] for d in ours) == ["bd", "be", "bj", "od", "oe"]
        kopf = {d["metadata"]["name"]: d["spec"]["scope"] for d in docs if d not in ours}
        assert kopf == {"clusterkopfpeerings.kopf.dev": "Cluster", "kopfpeerings.kopf.dev": "Namespaced"}


def test_model_defaults_follow_azure() -> None:
    spec = OnlineDeploymentSpec(endpointName="ep", model="models:/m/1")
    assert spec.instanceCount == 1
    assert spec.requestSettings.requestTimeoutMs == 5000
    assert spec.requestSettings.maxConcurrentRequestsPerInstance == 8
    assert (spec.livenessProbe.initialDelay, spec.livenessProbe.period, spec.livenessProbe.timeout) == (
        10,
        10,
        2,
    )
    assert spec.scaleSettings.targetUtilizationPercentage == 70
    assert OnlineEndpointSpec().router.replicas == 2


@pytest.mark.parametrize(
    ("traffic", "mirror", "expected"),
    [
        ({"blue": 90, "green": 20}, {}, ["spec.traffic: percentages sum to 110, must be 0 or 100"]),
        ({"blue": 50}, {}, ["spec.traffic: percentages sum to 50, must be 0 or 100"]),
        ({"blue": 100}, {"green": 10}, []),
        ({}, {}, []),
        (
            {"blue": 100},
            {"blue": 10},
            ["spec.mirrorTraffic.blue: mirrors to a deployment with 100% live traffic, must have 0"],
        ),
        ({"blue": 100}, {"green": 60}, ["spec.mirrorTraffic.green: 60% is outside 1-50"]),
        (
            {"blue": 100},
            {"green": 10, "red": 10},
            ["spec.mirrorTraffic: 2 entries, at most 1 allowed"],
        ),
    ],
)
def test_traffic_rules(traffic: dict[str, int], mirror: dict[str, int], expected: list[str]) -> None:
    spec = OnlineEndpointSpec.model_construct(traffic=traffic, mirrorTraffic=mirror)
    assert validate_endpoint(spec) == expected


def test_traffic_must_name_existing_deployments() -> None:
    spec = OnlineEndpointSpec(traffic={"blue": 50, "green": 50}, mirrorTraffic={"shadow": 5})
    assert validate_endpoint(spec, deployments={"blue", "green", "shadow"}) == []
    assert validate_endpoint(spec, deployments={"blue"}) == [
        "spec.traffic.green: no OnlineDeployment 'green' of this endpoint",
        "spec.mirrorTraffic.shadow: no OnlineDeployment 'shadow' of this endpoint",
    ]


@pytest.mark.parametrize(
    ("uri", "valid"),
    [
        ("models:/diabetes/1", True),
        ("models:/diabetes@champion", True),
        ("models:/diabetes/latest", True),
        ("models:/diabetes", False),
        ("models:/diabetes/0", False),
        ("models:/diabetes/one", False),
        ("runs:/abc123/model", True),
        ("runs:/", False),
        ("s3://bucket/models/m", True),
        ("gs://bucket/m", True),
        ("abfss://c@acct.dfs.core.windows.net/m", True),
        ("https://example.com/m.tar.gz", True),
        ("/mnt/models/m", True),
        ("file:///mnt/models/m", True),
        ("relative/path", False),
        ("ftp://host/m", False),
    ],
)
def test_model_uri_syntax(uri: str, valid: bool) -> None:
    errors = validate_model_uri(uri)
    assert (errors == []) is valid
    if not valid:
        assert errors[0].startswith("spec.model: ")


def test_parse_model_uri() -> None:
    assert parse_model_uri("models:/m@prod") == ("m", "alias", "prod")
    assert parse_model_uri("models:/m/latest") == ("m", "latest", "latest")
    assert parse_model_uri("models:/m/7") == ("m", "version", "7")
    assert parse_model_uri("s3://b/m") is None


def test_deployment_rules() -> None:
    spec = OnlineDeploymentSpec.model_validate(
        {
            "endpointName": "ep",
            "model": "models:/m",
            "modelMountPath": "model",
            "scaleSettings": {"type": "targetUtilization", "minInstances": 3, "maxInstances": 2},
        }
    )
    assert validate_deployment("router", spec) == [
        "spec.model: 'models:/m' is not a registry URI; expected models:/NAME/VERSION, models:/NAME@ALIAS "
        "or models:/NAME/latest",
        "spec.scaleSettings: minInstances 3 exceeds maxInstances 2",
        "spec.resources.requests.cpu: required by scaleSettings.type targetUtilization",
        "spec.modelMountPath: 'model' must be an absolute path",
    ]
    good = OnlineDeploymentSpec(endpointName="ep", model="models:/m/1")
    assert validate_deployment("blue", good) == []
    assert validate_deployment("Blue_1", good) == [
        "metadata.name: 'Blue_1' must be a DNS label (lower-case letters, digits and '-')"
    ]


def test_deleting_a_deployment_with_live_traffic_is_refused() -> None:
    endpoint = OnlineEndpointSpec(traffic={"blue": 100, "green": 0}, mirrorTraffic={"shadow": 5})
    assert validate_deployment_delete("blue", endpoint) == [
        "spec.traffic.blue: the endpoint sends 100% of live traffic to this deployment; "
        "set it to 0 before deleting"
    ]
    assert validate_deployment_delete("green", endpoint) == []
    assert validate_deployment_delete("shadow", endpoint) == [
        "spec.mirrorTraffic.shadow: the endpoint mirrors traffic to this deployment; remove it first"
    ]
    assert validate_deployment_delete("blue", None) == []


def test_schema_errors_name_the_field() -> None:
    spec, errors = parse_spec(OnlineDeploymentSpec, {"endpointName": "ep", "model": "m", "instanceCount": 0})
    assert spec is None
    assert errors == ["spec.instanceCount: Input should be greater than or equal to 1"]
    spec, errors = parse_spec(OnlineEndpointSpec, {"traffic": {"blue": 100}})
    assert errors == [] and spec is not None and spec.traffic == {"blue": 100}
