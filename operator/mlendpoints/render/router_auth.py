"""authMode token: the ClusterRoleBinding that lets an endpoint's router ask the API server about tokens.

TokenReviews and SubjectAccessReviews are cluster-scoped, so no RoleBinding can grant them. The chart
ships one ClusterRole (`<release>-router-auth-delegator`) with exactly `create` on those two, and the
operator binds each token-mode endpoint's router ServiceAccount to it, one ClusterRoleBinding per
endpoint. A cluster-scoped object cannot be owned by a namespaced one (the garbage collector ignores
such an owner reference), so the binding names its endpoint in labels and the operator deletes it
itself, level-based (operator/online.py).
"""

from __future__ import annotations

from mlendpoints.render.common import Object, router_name
from mlendpoints_serving import contract

CLUSTER_ROLE_BINDING = "ClusterRoleBinding"
RBAC_V1 = "rbac.authorization.k8s.io/v1"
# The two verbs the chart's ClusterRole grants (and nothing more): also what the tests hold it to.
ROUTER_AUTH_RULES: list[Object] = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
]


def router_auth_binding_name(namespace: str, endpoint: str) -> str:
    """Unique per endpoint: a namespace has no dot, so `<prefix>.<namespace>.<name>` never collides."""
    return f"{contract.ROUTER_AUTH_BINDING_PREFIX}.{namespace}.{endpoint}"


def router_auth_labels(namespace: str, endpoint: str) -> dict[str, str]:
    return {
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_COMPONENT: contract.COMPONENT_ROUTER_AUTH,
        contract.LABEL_ENDPOINT: endpoint,
        contract.LABEL_ENDPOINT_NAMESPACE: namespace,
    }


def render_router_auth_binding(namespace: str, endpoint: str, cluster_role: str) -> Object:
    """Binds only the endpoint's router ServiceAccount, only to the auth-delegator ClusterRole."""
    return {
        "apiVersion": RBAC_V1,
        "kind": CLUSTER_ROLE_BINDING,
        "metadata": {
            "name": router_auth_binding_name(namespace, endpoint),
            "labels": router_auth_labels(namespace, endpoint),
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": router_name(endpoint), "namespace": namespace}],
    }


def endpoint_of_binding(obj: Object) -> tuple[str, str] | None:
    """(namespace, name) of the endpoint a router-auth ClusterRoleBinding was made for."""
    found = (obj.get("metadata") or {}).get("labels") or {}
    if found.get(contract.LABEL_COMPONENT) != contract.COMPONENT_ROUTER_AUTH:
        return None
    namespace, name = found.get(contract.LABEL_ENDPOINT_NAMESPACE), found.get(contract.LABEL_ENDPOINT)
    return (namespace, name) if namespace and name else None
