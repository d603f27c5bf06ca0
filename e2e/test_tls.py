"""spec.tls end to end on the local cluster (issue 15): while the kubernetes.io/tls Secret is missing the
router cannot start and RouterReady names spec.tls.secretName; once it exists the endpoint becomes
Ready with an https:// scoring URI, and a request scored through the router's Service (by the CLI's
client, as `mlendpoints invoke --ca-file`) verifies the certificate against the test's own CA; the
scaler's plain admin port answers from inside the pod network."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from e2e.operator_deploy import Kubectl, wait_for
from e2e.test_operator import condition, deployment, endpoint, wait_ready
from mlendpoints.client import Cluster, score
from mlendpoints_serving.contract import ROUTER_ADMIN_PORT, ROUTER_SCALING_PATH
from tests.fixtures.tls_certs import issue

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

ROW = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)


def test_tls_endpoint_serves_https_verified(
    kubectl: Kubectl, namespace: str, kube_cluster: Any, tmp_path: Path
) -> None:
    ns, name = namespace, "secure"
    hosts = [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
    cert = issue(tmp_path / "tls", "e2e CA", hosts)
    kubectl.apply(
        [
            endpoint(name, {"blue": 100}, tls={"secretName": "secure-cert"}),
            deployment("blue", name, "models:/diabetes@champion"),
        ],
        ns,
    )

    def names_the_secret() -> str | None:
        message = condition(kubectl.get("onlineendpoint", name, ns), "RouterReady").get("message") or ""
        return message if "spec.tls.secretName 'secure-cert'" in message else None

    wait_for("RouterReady naming the missing Secret", names_the_secret, 60, interval=1)
    kubectl.run(
        "-n", ns, "create", "secret", "tls", "secure-cert", f"--cert={cert.cert}", f"--key={cert.key}"
    )  # fmt: skip
    status = wait_ready(kubectl, "onlineendpoint", name, ns)["status"]
    assert status["scoringUri"] == f"https://{name}.{ns}.svc.cluster.local/score"
    service = kubectl.json("-n", ns, "get", "service", name)
    assert service["spec"]["ports"][0]["port"] == 443

    cluster = Cluster(str(kube_cluster.kubeconfig), None, ns)
    body = json.dumps({"input_data": [ROW]}).encode()
    key = cluster.keys(name)["primaryKey"]

    def scored() -> tuple[int, str | None, str] | None:
        with cluster.route(name, str(cert.ca)) as route:
            assert route.tls is not None and route.tls.server_name == hosts[-1]
            try:
                answer = score(route, key, body, None, timeout=10)
            except OSError:  # the Service not yet in kube-proxy's rules
                return None
        return (answer.status, answer.served_by, route.via) if answer.status == 200 else None

    status_code, served_by, via = wait_for("a request scored over HTTPS", scored, 60, interval=1)
    assert (status_code, served_by) == (200, "blue"), via

    # The plain admin port (what the scaler scrapes by pod IP) serves the router's own paths.
    pods = kubectl.json("-n", ns, "get", "pods", "-l", "mlendpoints.io/component=router")["items"]
    ip = pods[0]["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:{ROUTER_ADMIN_PORT}{ROUTER_SCALING_PATH}", timeout=10) as resp:
        assert "blue" in json.loads(resp.read())["deployments"]

    # Another CA's bundle does not verify the router's certificate.
    other = issue(tmp_path / "other", "other CA", hosts)
    with cluster.route(name, str(other.ca)) as route, pytest.raises(OSError, match="CERTIFICATE_VERIFY"):
        score(route, key, body, None, timeout=10)
