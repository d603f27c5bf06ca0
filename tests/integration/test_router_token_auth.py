"""authMode token against the real API server of the local cluster: mlendpoints-router in cluster mode on
the host, with the credentials its pod would have (its ServiceAccount's token, bound to exactly what the
operator renders: its Role, and the router-auth ClusterRole through the operator's ClusterRoleBinding).

Callers present ServiceAccount tokens from the TokenRequest API (`kubectl create token`): one granted
`create onlineendpoints/score` of this endpoint by a Role and RoleBinding gets 200, one without gets 403,
a garbage token and no token get 401; a grant revoked or made shows within the cache's TTLs; no token is
ever in the router's log.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as kube_client

from e2e.localcluster.fixture import KubeCluster
from mlendpoints.render.common import router_name
from mlendpoints.render.router_auth import ROUTER_AUTH_RULES, render_router_auth_binding
from mlendpoints_serving.contract import (
    FLAG_ROUTER_TOKEN_ALLOWED_TTL_S,
    FLAG_ROUTER_TOKEN_DENIED_TTL_S,
    LABEL_MANAGED_BY,
    REASON_TOKEN_FORBIDDEN,
    REASON_TOKEN_INVALID,
    REASON_TOKEN_MISSING,
    ROUTER_CONFIG_KEY,
    keys_secret_name,
    router_configmap_name,
)
from tests.fixtures.servers import free_port, running
from tests.integration.router_support import REPO, ROUTER, Backends, until
from tests.integration.test_router_kube import Cluster

pytestmark = pytest.mark.cluster

ENDPOINT = "tk"
TTL_S = 1.0  # short here, so a revoked or new grant shows within the test


def rbac(api: kube_client.ApiClient) -> Any:  # Any: the tests pass plain dicts as bodies
    return kube_client.RbacAuthorizationV1Api(api)


def token_of(core: Any, namespace: str, account: str) -> str:
    """A TokenRequest token, as `kubectl create token ACCOUNT` gets (audience: the API server's)."""
    body: Any = {"spec": {"expirationSeconds": 3600}}
    return str(core.create_namespaced_service_account_token(account, namespace, body).status.token)


def score_grant(namespace: str, name: str, subject: dict[str, str], endpoints: list[str]) -> list[Any]:
    """What a user writes to let `subject` score: plain RBAC on onlineendpoints/score."""
    role = {
        "metadata": {"name": name},
        "rules": [
            {
                "apiGroups": ["mlendpoints.io"],
                "resources": ["onlineendpoints/score"],
                "resourceNames": endpoints,
                "verbs": ["create"],
            }
        ],
    }
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{**subject, "namespace": namespace} if subject["kind"] == "ServiceAccount" else subject],
    }
    return [role, binding]


@pytest.fixture
def token_router(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    api = kube_cluster.api_client
    core: Any = kube_client.CoreV1Api(api)
    cluster = Cluster(kube_cluster, namespace)
    with contextlib.ExitStack() as stack:
        backend = Backends(stack, tmp_path).start("blue", host=cluster.host_ip)
        cluster.service(f"{ENDPOINT}-blue")
        cluster.endpoint_slice(f"{ENDPOINT}-blue-1", f"{ENDPOINT}-blue", int(backend.rsplit(":", 1)[1]))
        config = {
            "endpoint": ENDPOINT,
            "namespace": namespace,
            "authMode": "token",
            "accessLog": True,
            "traffic": {"blue": 100},
            "deployments": {"blue": {"service": f"{ENDPOINT}-blue", "port": 5001}},
        }
        configmap: Any = {
            "metadata": {"name": router_configmap_name(ENDPOINT)},
            "data": {ROUTER_CONFIG_KEY: json.dumps(config)},
        }
        core.create_namespaced_config_map(namespace, configmap)

        # The router's identity, as the operator renders it: its Role, and the router-auth ClusterRole.
        router_sa = router_name(ENDPOINT)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": router_sa}})
        watch = ["get", "list", "watch"]
        role: Any = {
            "metadata": {"name": router_sa},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"],
                 "resourceNames": [router_configmap_name(ENDPOINT)], "verbs": watch},
                {"apiGroups": [""], "resources": ["secrets"],
                 "resourceNames": [keys_secret_name(ENDPOINT)], "verbs": watch},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": watch},
            ],
        }  # fmt: skip
        rbac(api).create_namespaced_role(namespace, role)
        rbac(api).create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": router_sa},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": router_sa},
                "subjects": [{"kind": "ServiceAccount", "name": router_sa, "namespace": namespace}],
            },
        )
        cluster_role = f"test-router-auth-{uuid.uuid4().hex[:8]}"
        rbac(api).create_cluster_role({"metadata": {"name": cluster_role}, "rules": ROUTER_AUTH_RULES})
        stack.callback(rbac(api).delete_cluster_role, cluster_role)
        binding = render_router_auth_binding(namespace, ENDPOINT, cluster_role)
        # The test's, not an operator's: without the managed-by label an operator running on this
        # cluster (an e2e run leaves one) does not take it for its endpoint's orphan and delete it.
        del binding["metadata"]["labels"][LABEL_MANAGED_BY]
        rbac(api).create_cluster_role_binding(binding)
        stack.callback(rbac(api).delete_cluster_role_binding, binding["metadata"]["name"])

        configuration = api.configuration
        kubeconfig = tmp_path / "router-kubeconfig"
        server: dict[str, Any] = {"server": configuration.host}
        if configuration.ssl_ca_cert:
            server["certificate-authority"] = configuration.ssl_ca_cert
        if not configuration.verify_ssl:
            server["insecure-skip-tls-verify"] = True
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": server}],
                    "users": [{"name": "router", "user": {"token": token_of(core, namespace, router_sa)}}],
                    "contexts": [{"name": "router", "context": {"cluster": "c", "user": "router"}}],
                    "current-context": "router",
                }
            )
        )

        port = free_port()
        log = tmp_path / "router.log"
        argv = [*ROUTER, "--configmap", router_configmap_name(ENDPOINT), "--namespace", namespace]
        argv += ["--kubeconfig", str(kubeconfig), "--port", str(port), "--host", "127.0.0.1"]
        argv += [FLAG_ROUTER_TOKEN_ALLOWED_TTL_S, str(TTL_S), FLAG_ROUTER_TOKEN_DENIED_TTL_S, str(TTL_S)]
        argv += ["--log-level", "debug"]
        stack.enter_context(running(argv, ready_url=f"http://127.0.0.1:{port}/health", cwd=REPO, log=log))
        yield {
            "url": f"http://127.0.0.1:{port}",
            "core": core,
            "api": api,
            "log": log,
            "namespace": namespace,
        }


def post(url: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{url}/score", json={}, headers=headers, timeout=15)


def test_tokens_are_reviewed_and_authorised_by_the_real_api_server(token_router: dict[str, Any]) -> None:
    url, core, api, ns = (
        token_router["url"],
        token_router["core"],
        token_router["api"],
        token_router["namespace"],
    )
    for account in ("scorer", "outsider", "grouped"):
        core.create_namespaced_service_account(ns, {"metadata": {"name": account}})
    for obj in score_grant(ns, "scorer", {"kind": "ServiceAccount", "name": "scorer"}, [ENDPOINT]):
        create = (
            rbac(api).create_namespaced_role if "rules" in obj else rbac(api).create_namespaced_role_binding
        )
        create(ns, obj)
    # A grant on another endpoint only: not this one.
    for obj in score_grant(ns, "other-ep", {"kind": "ServiceAccount", "name": "outsider"}, ["other"]):
        create = (
            rbac(api).create_namespaced_role if "rules" in obj else rbac(api).create_namespaced_role_binding
        )
        create(ns, obj)
    scorer, outsider = token_of(core, ns, "scorer"), token_of(core, ns, "outsider")
    grouped = token_of(core, ns, "grouped")

    # Granted: 200 from the backend (RBAC may take a moment to see a new binding).
    until(lambda: post(url, scorer).status_code == 200, within=10)
    answer = post(url, scorer)
    assert answer.status_code == 200 and answer.json()["backend"] == "blue"

    denied = post(url, outsider)
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert error["code"] == REASON_TOKEN_FORBIDDEN
    assert f"system:serviceaccount:{ns}:outsider" in error["message"]
    assert "onlineendpoints/score" in error["message"]

    garbage = post(url, "not-a-token-" + "x" * 40)
    assert garbage.status_code == 401 and garbage.json()["error"]["code"] == REASON_TOKEN_INVALID
    missing = post(url, None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == REASON_TOKEN_MISSING
    assert missing.headers["www-authenticate"] == "Bearer"

    # A group grant works as well (the review carries the token's groups).
    group = {"kind": "Group", "name": f"system:serviceaccounts:{ns}", "apiGroup": "rbac.authorization.k8s.io"}
    assert post(url, grouped).status_code == 403
    for obj in score_grant(ns, "whole-ns", group, [ENDPOINT]):
        create = (
            rbac(api).create_namespaced_role if "rules" in obj else rbac(api).create_namespaced_role_binding
        )
        create(ns, obj)
    assert until(lambda: post(url, grouped).status_code == 200, within=10) < 10
    rbac(api).delete_namespaced_role_binding("whole-ns", ns)

    # Revoked: the scorer is refused once the allowed answer's TTL is over.
    rbac(api).delete_namespaced_role_binding("scorer", ns)
    assert until(lambda: post(url, scorer).status_code == 403, within=10) < TTL_S + 5

    text = token_router["log"].read_text()
    assert '"status":403' in text and '"status":200' in text, "the access log was read"
    for token in (scorer, outsider, grouped):
        assert token not in text and token[-40:] not in text, "a token in the router's log"
    assert "Bearer " not in text and "not-a-token" not in text
