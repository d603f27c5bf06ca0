"""spec.tls (issue 15): the API field and its CRD schema, the router's render, the endpoint's status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mlendpoints.api.crdgen import crd
from mlendpoints.api.kinds import ONLINE_ENDPOINT
from mlendpoints.api.online import OnlineEndpointStatus
from mlendpoints.errors import UserError
from mlendpoints.local.manifests import load, select_endpoint
from mlendpoints.operator.status import endpoint_status
from mlendpoints.render.discovery import MODERN
from mlendpoints.render.endpoint import Routing, render_endpoint
from mlendpoints_serving import contract
from tests.unit.operator.test_render import SETTINGS, by_kind, deployment, endpoint, routed


def children(**spec: Any) -> dict[str, dict[str, Any]]:
    ep = endpoint(**spec)
    return by_kind(render_endpoint(ep, routed(ep, deployment("blue")), MODERN, SETTINGS))


def test_tls_mounts_the_secret_and_serves_https() -> None:
    kinds = children(tls={"secretName": "diabetes-cert"})
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["volumes"] == [{"name": "tls", "secret": {"secretName": "diabetes-cert"}}]
    assert container["volumeMounts"] == [
        {"name": "tls", "mountPath": contract.ROUTER_TLS_MOUNT, "readOnly": True}
    ]
    args = container["args"]
    assert args[args.index("--tls-cert-file") + 1] == "/etc/mlendpoints/tls/tls.crt"
    assert args[args.index("--tls-key-file") + 1] == "/etc/mlendpoints/tls/tls.key"
    assert args[args.index("--admin-port") + 1] == str(contract.ROUTER_ADMIN_PORT)
    assert container["ports"] == [
        {"name": "https", "containerPort": contract.ROUTER_PORT, "protocol": "TCP"},
        {"name": "admin", "containerPort": contract.ROUTER_ADMIN_PORT, "protocol": "TCP"},
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "https", "scheme": "HTTPS"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "https"}
    assert kinds["Service"]["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP", "appProtocol": "https"}
    ]
    # Mounted by kubelet: the router's Role still names only its keys Secret.
    secrets = [r for r in kinds["Role"]["rules"] if r["resources"] == ["secrets"]]
    assert secrets[0]["resourceNames"] == ["diabetes-keys"]


def test_tls_mount_is_added_to_a_collectors_mounts() -> None:
    ep = endpoint(tls={"secretName": "cert"})
    blue = deployment("blue", dataCollector={"enabled": True, "destination": "pvc://claim/x"})
    config = routed(ep, blue)
    assert blue.spec.dataCollector is not None
    rendered = render_endpoint(ep, config, MODERN, SETTINGS, {"blue": blue.spec.dataCollector})
    pod = next(c for c in rendered if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert {v["name"] for v in pod["volumes"]} >= {"tls", "collector-0"}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["tls"]["readOnly"] is True and "collector-0" in mounts


def test_without_tls_nothing_changes_but_the_admin_port() -> None:
    kinds = children()
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "volumeMounts" not in container and "--tls-cert-file" not in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert kinds["Service"]["spec"]["ports"][0]["port"] == 80


@pytest.mark.parametrize("name", ["", "Bad_Name", "-x", "a" * 254])
def test_secret_name_must_be_a_secret_name(name: str) -> None:
    with pytest.raises(ValidationError):
        endpoint(tls={"secretName": name})


def test_crd_has_the_tls_field() -> None:
    schema = crd(ONLINE_ENDPOINT)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    tls = schema["properties"]["spec"]["properties"]["tls"]
    assert tls["required"] == ["secretName"]
    assert tls["properties"]["secretName"]["maxLength"] == 253


def test_status_is_https_and_names_the_secret_while_no_router_is_ready() -> None:
    def status(router: dict[str, Any] | None) -> OnlineEndpointStatus:
        return endpoint_status(
            name="diabetes",
            namespace="ml",
            generation=1,
            routing=Routing({}, {}),
            deployments={},
            router=router,
            previous=OnlineEndpointStatus(),
            deleting=False,
            now="2026-01-01T00:00:00Z",
            tls_secret="diabetes-cert",
        )

    waiting = status({"spec": {"replicas": 2}, "status": {}})
    assert waiting.scoringUri == "https://diabetes.ml.svc.cluster.local/score"
    assert waiting.openapiUri == "https://diabetes.ml.svc.cluster.local/swagger.json"
    router_ready = next(c for c in waiting.conditions if c.type == "RouterReady")
    assert router_ready.status == "False"
    assert "spec.tls.secretName 'diabetes-cert'" in (router_ready.message or "")
    up = status({"spec": {"replicas": 2}, "status": {"readyReplicas": 2}})
    assert next(c for c in up.conditions if c.type == "RouterReady").message == "2/2 router pods ready"


def test_local_mode_refuses_tls(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text(
        "apiVersion: mlendpoints.io/v1alpha1\nkind: OnlineEndpoint\nmetadata: {name: diabetes}\n"
        "spec: {tls: {secretName: cert}}\n"
    )
    with pytest.raises(UserError, match=r"spec\.tls is not supported by local mode"):
        select_endpoint(load([tmp_path]))
