"""mlendpoints-router in cluster mode against the real API server of the local cluster.

The router runs on the host with the cluster's kubeconfig; its deployments' Services have no selector,
so the test writes their EndpointSlices itself, pointing at real backends listening on the host address
the cluster uses (the API server's). Each change to the ConfigMap, the keys Secret or an EndpointSlice
must show in routing within 1 s.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as kube_client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError

from e2e.localcluster.fixture import KubeCluster
from mlendpoints_serving.contract import LABEL_SERVICE_NAME, ROUTER_CONFIG_KEY
from mlendpoints_serving.router.watch import KubeApi
from tests.fixtures.servers import free_port, running
from tests.integration.router_support import REPO, ROUTER, Backends, until

pytestmark = pytest.mark.cluster

ENDPOINT = "kr"
KEY, ROTATED = "kube-primary", "kube-rotated"


class Cluster:
    """What the test writes through the API: Services, EndpointSlices, keys Secret, router ConfigMap."""

    def __init__(self, kube_cluster: KubeCluster, namespace: str) -> None:
        self.api = kube_cluster.api_client
        self.host_ip = (
            kube_cluster.host_address
        )  # where the cluster reaches this machine; backends listen there
        self.core = kube_client.CoreV1Api(self.api)
        self.namespace = namespace
        self.slice_version = KubeApi(self.api).endpointslice_version()
        self.slices = DynamicClient(self.api).resources.get(
            api_version=f"discovery.k8s.io/{self.slice_version}", kind="EndpointSlice"
        )

    def service(self, name: str) -> None:
        body: Any = {"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 5001}]}}
        self.core.create_namespaced_service(self.namespace, body)

    def endpoint_slice(self, name: str, service: str, port: int, ready: bool = True) -> None:
        body: Any = {
            "apiVersion": f"discovery.k8s.io/{self.slice_version}",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "labels": {
                    LABEL_SERVICE_NAME: service,
                    "endpointslice.kubernetes.io/managed-by": "router-test",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [self.host_ip], "conditions": {"ready": ready}}],
        }
        try:
            self.slices.create(body=body, namespace=self.namespace)
        except ConflictError:
            current = self.slices.get(name=name, namespace=self.namespace)
            body["metadata"]["resourceVersion"] = current.metadata.resourceVersion
            self.slices.replace(body=body, namespace=self.namespace)

    def keys(self, primary: str) -> None:
        data = {"primaryKey": primary, "secondaryKey": "kube-secondary"}
        body: Any = {
            "metadata": {"name": f"{ENDPOINT}-keys"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        with contextlib.suppress(kube_client.ApiException):
            self.core.create_namespaced_secret(self.namespace, body)
            return
        self.core.replace_namespaced_secret(f"{ENDPOINT}-keys", self.namespace, body)

    def router_config(self, traffic: dict[str, int]) -> None:
        config = {
            "endpoint": ENDPOINT,
            "authMode": "key",
            "traffic": traffic,
            "deployments": {
                "blue": {"service": f"{ENDPOINT}-blue", "port": 5001},
                "green": {"service": f"{ENDPOINT}-green", "port": 5001},
            },
        }
        body: Any = {
            "metadata": {"name": f"{ENDPOINT}-router"},
            "data": {ROUTER_CONFIG_KEY: json.dumps(config)},
        }
        with contextlib.suppress(kube_client.ApiException):
            self.core.create_namespaced_config_map(self.namespace, body)
            return
        self.core.replace_namespaced_config_map(f"{ENDPOINT}-router", self.namespace, body)


@pytest.fixture
def cluster(kube_cluster: KubeCluster, namespace: str) -> Cluster:
    return Cluster(kube_cluster, namespace)


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    with contextlib.ExitStack() as stack:
        yield Backends(stack, tmp_path)


def test_router_follows_configmap_secret_and_endpointslices(
    cluster: Cluster, backends: Backends, kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    ports = {
        name: int(backends.start(name, host=cluster.host_ip).rsplit(":", 1)[1])
        for name in ("blue", "green-a", "green-b")
    }
    for deployment in ("blue", "green"):
        cluster.service(f"{ENDPOINT}-{deployment}")
    cluster.endpoint_slice(f"{ENDPOINT}-blue-1", f"{ENDPOINT}-blue", ports["blue"])
    cluster.endpoint_slice(f"{ENDPOINT}-green-1", f"{ENDPOINT}-green", ports["green-a"])
    cluster.keys(KEY)
    cluster.router_config({"blue": 100, "green": 0})

    port = free_port()
    argv = [*ROUTER, "--configmap", f"{ENDPOINT}-router", "--namespace", cluster.namespace]
    argv += ["--kubeconfig", str(kube_cluster.kubeconfig), "--port", str(port), "--host", "127.0.0.1"]
    with running(argv, ready_url=f"http://127.0.0.1:{port}/health", cwd=REPO, log=tmp_path / "router.log"):
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {KEY}"})
        # The router chose the EndpointSlice version the server serves (v1beta1 on Kubernetes 1.20).
        assert f'"endpointslice_version":"{cluster.slice_version}"' in (tmp_path / "router.log").read_text()

        def backend_of(response: httpx.Response) -> str:
            assert response.status_code == 200, response.text
            return str(response.json()["backend"])

        def within_a_second(change: Callable[[], None], condition: Callable[[], bool]) -> None:
            change()
            assert until(condition, within=3) < 1.0

        assert {backend_of(client.post("/score", json={})) for _ in range(20)} == {"blue"}

        # ConfigMap: all traffic to green.
        within_a_second(
            lambda: cluster.router_config({"blue": 0, "green": 100}),
            lambda: backend_of(client.get("/score")) == "green-a",
        )
        assert {backend_of(client.get("/score")) for _ in range(20)} == {"green-a"}

        # A second EndpointSlice for green: requests are balanced across both pods.
        within_a_second(
            lambda: cluster.endpoint_slice(f"{ENDPOINT}-green-2", f"{ENDPOINT}-green", ports["green-b"]),
            lambda: backend_of(client.get("/score")) == "green-b",
        )
        assert {backend_of(client.get("/score")) for _ in range(40)} == {"green-a", "green-b"}

        # Green's pods go unready: its share is rerouted to blue, and says so.
        cluster.router_config({"blue": 50, "green": 50})

        def green_unready() -> None:
            for slice_name, backend in (("green-1", "green-a"), ("green-2", "green-b")):
                cluster.endpoint_slice(
                    f"{ENDPOINT}-{slice_name}", f"{ENDPOINT}-green", ports[backend], ready=False
                )

        within_a_second(
            green_unready, lambda: all(backend_of(client.get("/score")) == "blue" for _ in range(10))
        )
        rerouted = [client.get("/score").headers.get("x-mlendpoints-rerouted") for _ in range(100)]
        assert 20 < rerouted.count("green") < 80

        # Keys Secret rotated: the new key works, the old one no longer does.
        within_a_second(
            lambda: cluster.keys(ROTATED),
            lambda: client.get("/score", headers={"authorization": f"Bearer {ROTATED}"}).status_code == 200,
        )
        assert client.get("/score").status_code == 401
        client.close()


def test_endpointslice_version_by_discovery_on_the_real_api_server(cluster: Cluster) -> None:
    served = {v["version"] for v in KubeApi(cluster.api).get("/apis/discovery.k8s.io").get("versions", [])}
    assert cluster.slice_version == ("v1" if "v1" in served else "v1beta1")
