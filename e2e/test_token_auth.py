"""authMode token end to end: the operator (installed by the chart, with its RBAC) binds the router's
ServiceAccount to the chart's router-auth ClusterRole, and the router pod asks the real API server about
each caller's token. A ServiceAccount granted `create onlineendpoints/score` by a Role and RoleBinding
scores (200); one without gets 403, a garbage token and no token 401, each with a JSON reason; no token
reaches the router's log; the ClusterRoleBinding goes when the endpoint leaves token mode.

The host-side variant with revocation, groups and TTLs is tests/integration/test_router_token_auth.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from e2e.operator_deploy import Kubectl, wait_for
from e2e.test_operator import deployment, endpoint, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

BINDING = "mlendpoints-router-auth.{ns}.scored"
ROW = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)


def post(address: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://{address}/score", data=json.dumps({"input_data": [ROW]}).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def grant(kubectl: Kubectl, ns: str, account: str) -> None:
    kubectl.run(
        "-n", ns, "create", "role", "scorers", "--verb=create",
        "--resource=onlineendpoints.mlendpoints.io/score", "--resource-name=scored",
    )  # fmt: skip
    kubectl.run(
        "-n", ns, "create", "rolebinding", "scorers", "--role=scorers", f"--serviceaccount={ns}:{account}"
    )


def test_token_mode_through_the_router_pod(kubectl: Kubectl, namespace: str) -> None:
    ns = namespace
    kubectl.apply(
        [
            endpoint("scored", {"blue": 100}, authMode="token"),
            deployment("blue", "scored", "models:/diabetes@champion"),
        ],
        ns,
    )
    for account in ("scorer", "outsider"):
        kubectl.run("-n", ns, "create", "serviceaccount", account)
    grant(kubectl, ns, "scorer")
    wait_ready(kubectl, "onlineendpoint", "scored", ns)

    binding = kubectl.json("get", "clusterrolebinding", BINDING.format(ns=ns))
    assert binding["roleRef"]["name"] == "mlendpoints-router-auth-delegator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "scored-router", "namespace": ns}]
    # The router's own Role never holds the review verbs.
    role = kubectl.json("-n", ns, "get", "role", "scored-router")
    assert not {"tokenreviews", "subjectaccessreviews"} & {
        r for rule in role["rules"] for r in rule["resources"]
    }

    address = kubectl.json("-n", ns, "get", "service", "scored")["spec"]["clusterIP"]
    scorer = kubectl.run("-n", ns, "create", "token", "scorer").strip()
    outsider = kubectl.run("-n", ns, "create", "token", "outsider").strip()
    wait_for("a scored request", lambda: post(address, scorer)[0] == 200, 60, interval=1)
    status, body = post(address, scorer)
    assert status == 200 and len(body) == 1, body

    status, body = post(address, outsider)
    assert status == 403 and body["error"]["code"] == "forbidden", body
    assert f"system:serviceaccount:{ns}:outsider" in body["error"]["message"]
    status, body = post(address, "garbage." + "x" * 40)
    assert status == 401 and body["error"]["code"] == "token_invalid", body
    status, body = post(address, None)
    assert status == 401 and body["error"]["code"] == "unauthorized", body

    logs = kubectl.run("-n", ns, "logs", "deployment/scored-router", "--all-containers")
    assert '"msg":"listening"' in logs, "the router's log was read"
    for token in (scorer, outsider):
        assert token[-40:] not in logs, "a token in the router's log"
    assert "Bearer " not in logs

    # Leaving token mode takes the review verbs away (level-based: the operator deletes the binding).
    kubectl.run(
        "-n", ns, "patch", "onlineendpoint", "scored", "--type=merge", "-p", '{"spec":{"authMode":"key"}}'
    )
    gone = lambda: kubectl.try_run("get", "clusterrolebinding", BINDING.format(ns=ns)).returncode != 0  # noqa: E731
    wait_for("the router-auth ClusterRoleBinding to go", gone, 60, interval=1)
