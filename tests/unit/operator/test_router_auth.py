"""authMode token on the control plane: the router's ClusterRoleBinding (render), and its life kept by the
reconciler (made for token mode, deleted when the endpoint leaves token mode, is deleted, or is gone),
against the in-memory API server. The router's own Role never gains the review verbs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mlendpoints.api.common import GROUP_VERSION
from mlendpoints.errors import UserError
from mlendpoints.local.manifests import load, select_endpoint
from mlendpoints.operator.fake_kube import MemoryKube
from mlendpoints.operator.online import ENDPOINT, Reconciler
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.operator.store import Store
from mlendpoints.render.discovery import MODERN
from mlendpoints.render.endpoint import render_endpoint
from mlendpoints.render.router_auth import (
    CLUSTER_ROLE_BINDING,
    endpoint_of_binding,
    render_router_auth_binding,
    router_auth_binding_name,
)
from mlendpoints_serving import contract
from tests.unit.operator.test_render import SETTINGS, by_kind, endpoint, routed

NAMESPACE = "team"
ROLE = "rel-router-auth-delegator"


def test_binding_binds_only_the_endpoints_router_service_account_to_the_auth_role() -> None:
    binding = render_router_auth_binding("team", "ep", ROLE)
    assert binding["metadata"]["name"] == "mlendpoints-router-auth.team.ep"
    assert "namespace" not in binding["metadata"] and "ownerReferences" not in binding["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": ROLE,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ep-router", "namespace": "team"}]
    assert endpoint_of_binding(binding) == ("team", "ep")
    # Names cannot collide across namespace/name splits (a namespace has no dot).
    assert router_auth_binding_name("a-b", "c") != router_auth_binding_name("a", "b-c")


class Cluster:
    def __init__(self) -> None:
        self.kube = MemoryKube()
        settings = OperatorSettings(standalone=True, router_auth_cluster_role=ROLE)
        self.reconciler = Reconciler(self.kube, settings, MODERN, Store())

    def endpoint(self, name: str, auth_mode: str, **meta: Any) -> None:
        metadata = {"name": name, "namespace": NAMESPACE, **meta}
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": ENDPOINT,
            "metadata": metadata,
            "spec": {"authMode": auth_mode},
        }
        stored = self.kube.put(body) if (ENDPOINT, NAMESPACE, name) not in self.kube.objects else body
        if stored is body:  # an update: keep the uid
            live = self.kube.objects[(ENDPOINT, NAMESPACE, name)]
            live["spec"] = body["spec"]
            live["metadata"].update(meta)
            stored = live
        self.reconciler.store.put(ENDPOINT, NAMESPACE, name, dict(stored))

    def reconcile(self, name: str) -> None:
        asyncio.run(self.reconciler.reconcile((ENDPOINT, NAMESPACE, name)))
        # The ClusterRoleBinding watch reports what exists.
        for (kind, _, _), obj in list(self.kube.objects.items()):
            if kind == CLUSTER_ROLE_BINDING:
                asyncio.run(self.reconciler.auth_binding_event(obj, deleted=False))

    def binding(self, name: str) -> dict[str, Any] | None:
        return self.kube.peek(CLUSTER_ROLE_BINDING, "", router_auth_binding_name(NAMESPACE, name))


def test_token_mode_gets_the_binding_and_loses_it_when_leaving_token_mode() -> None:
    cluster = Cluster()
    cluster.endpoint("ep", "token")
    cluster.reconcile("ep")
    binding = cluster.binding("ep")
    assert binding is not None and binding["roleRef"]["name"] == ROLE
    role = cluster.kube.peek("Role", NAMESPACE, "ep-router")
    assert role is not None
    granted = {res for rule in role["rules"] for res in rule["resources"]}
    assert not granted & {"tokenreviews", "subjectaccessreviews"}
    cluster.endpoint("ep", "key")
    cluster.reconcile("ep")
    assert cluster.binding("ep") is None
    assert ("team", "ep") not in cluster.reconciler.auth_bindings


def test_key_and_none_modes_never_get_a_binding() -> None:
    cluster = Cluster()
    for name, mode in (("k", "key"), ("n", "none")):
        cluster.endpoint(name, mode)
        cluster.reconcile(name)
        assert cluster.binding(name) is None
    assert not any(kind == CLUSTER_ROLE_BINDING for kind, _, _ in cluster.kube.objects)


def test_a_deleting_endpoint_loses_its_binding() -> None:
    cluster = Cluster()
    cluster.endpoint("ep", "token")
    cluster.reconcile("ep")
    assert cluster.binding("ep") is not None
    cluster.endpoint("ep", "token", deletionTimestamp="2026-12-03T07:00:00Z")
    cluster.reconcile("ep")
    assert cluster.binding("ep") is None


def test_an_orphaned_binding_is_deleted_when_seen_and_others_are_left_alone() -> None:
    cluster = Cluster()
    orphan = cluster.kube.put(render_router_auth_binding(NAMESPACE, "gone", ROLE))
    asyncio.run(cluster.reconciler.auth_binding_event(orphan, deleted=False))
    assert cluster.binding("gone") is None
    # An operator watching other namespaces leaves another's binding alone.
    cluster.reconciler.settings.namespaces = ["elsewhere"]
    orphan = cluster.kube.put(render_router_auth_binding(NAMESPACE, "theirs", ROLE))
    asyncio.run(cluster.reconciler.auth_binding_event(orphan, deleted=False))
    assert cluster.binding("theirs") is not None
    # And a binding without our labels is not ours at all.
    labels = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY}
    plain = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": CLUSTER_ROLE_BINDING,
             "metadata": {"name": "x", "labels": labels}}  # fmt: skip
    assert endpoint_of_binding(plain) is None


def test_a_hand_edited_binding_is_put_back() -> None:
    cluster = Cluster()
    cluster.endpoint("ep", "token")
    cluster.reconcile("ep")
    live = cluster.kube.objects[(CLUSTER_ROLE_BINDING, "", router_auth_binding_name(NAMESPACE, "ep"))]
    # Another subject added by hand would get the review verbs: the reconcile the watch event
    # triggers puts the one subject back (roleRef itself is immutable in the API).
    live["subjects"].append({"kind": "ServiceAccount", "name": "intruder", "namespace": NAMESPACE})

    async def watch_event_then_settle() -> None:
        await cluster.reconciler.auth_binding_event(live, deleted=False)
        await asyncio.sleep(0.2)  # the reconcile it triggered

    asyncio.run(watch_event_then_settle())
    binding = cluster.binding("ep")
    assert binding is not None
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ep-router", "namespace": NAMESPACE}]


def test_local_mode_refuses_token_mode(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text(
        "apiVersion: mlendpoints.io/v1alpha1\nkind: OnlineEndpoint\nmetadata: {name: diabetes}\n"
        "spec: {authMode: token}\n"
    )
    with pytest.raises(UserError, match=r"authMode token is not supported by local mode") as refused:
        select_endpoint(load([tmp_path]))
    assert "key or none" in (refused.value.hint or "")


def test_the_router_role_is_the_same_in_every_auth_mode_and_config_says_token() -> None:
    roles = []
    for mode in ("key", "none", "token"):
        ep = endpoint(authMode=mode)
        config = routed(ep)
        assert config.authMode == mode
        roles.append(by_kind(render_endpoint(ep, config, MODERN, SETTINGS))["Role"]["rules"])
    assert roles[0] == roles[1] == roles[2]


def test_the_start_up_listing_deletes_nothing_and_the_resync_deletes_true_orphans() -> None:
    """On a restart the bindings may be listed before their endpoints: none is deleted then (a restart
    writes nothing); an orphan still present once the endpoints are listed goes in the resync."""
    cluster = Cluster()
    cluster.endpoint("ep", "token")
    cluster.reconcile("ep")
    live = cluster.binding("ep")
    assert live is not None
    orphan = cluster.kube.put(render_router_auth_binding(NAMESPACE, "gone", ROLE))
    settings = OperatorSettings(standalone=True, router_auth_cluster_role=ROLE)
    restarted = Reconciler(cluster.kube, settings, MODERN, Store())
    for obj in (live, orphan):  # listed before any endpoint is in the store
        asyncio.run(restarted.auth_binding_event(obj, deleted=False, initial=True))
    assert cluster.binding("ep") is not None and cluster.binding("gone") is not None
    endpoint = cluster.reconciler.store.get(ENDPOINT, NAMESPACE, "ep")
    assert endpoint is not None
    restarted.store.put(ENDPOINT, NAMESPACE, "ep", endpoint)
    asyncio.run(restarted.delete_orphaned_auth_bindings())
    assert cluster.binding("ep") is not None
    assert cluster.binding("gone") is None
