"""The cluster's own tests: what every other cluster test relies on.

A Deployment of a tiny HTTP server (built into a local image) gets Ready pods and
EndpointSlices, is reachable through its ClusterIP, has its pods' CPU in the
metrics API (metrics-server) and loses its children when deleted; a Job runs
to completion (reaching the Service and the API server from inside a pod,
without DNS); a crashing pod is restarted; a CRD serves custom
resources with a status subresource.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic

from e2e.localcluster.fixture import KubeCluster, docker_build, open_through_service, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.pod_security(
        "baseline",
        reason="its probe pods test the cluster itself (DNS, Services, Jobs), not what the operator renders",
    ),
]

TINY_IMAGE = "mlendpoints/e2e-tiny-http:dev"
APP = "tiny"
NON_ROOT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000}


@pytest.fixture(scope="module")
def tiny_image(kube_cluster: KubeCluster, base_image: str) -> str:
    return docker_build(
        kube_cluster, TINY_IMAGE, Path(__file__).parent / "localcluster" / "testimage", base_image
    )


def tiny_container(image: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "server",
        "image": image,
        "imagePullPolicy": "Never",
        "ports": [{"containerPort": 8000}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
        **extra,
    }


@pytest.fixture
def tiny_app(kube_cluster: KubeCluster, namespace: str, tiny_image: str) -> Iterator[str]:
    """A two-replica Deployment of the tiny server behind a ClusterIP Service, both named `tiny`."""
    apps: Any = client.AppsV1Api(kube_cluster.api_client)
    core: Any = client.CoreV1Api(kube_cluster.api_client)
    probe = {"httpGet": {"path": "/ready", "port": 8000}, "periodSeconds": 1}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": APP},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": APP}},
                "template": {
                    "metadata": {"labels": {"app": APP}},
                    "spec": {
                        "securityContext": NON_ROOT,
                        "containers": [tiny_container(tiny_image, readinessProbe=probe)],
                    },
                },
            },
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": APP},
            "spec": {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8000}]},
        },
    )
    wait_for(
        "2 ready replicas",
        lambda: (apps.read_namespaced_deployment(APP, namespace).status.ready_replicas or 0) == 2,
        timeout=90,
    )
    if kube_cluster.local:
        # Pods may use the Service as soon as this returns: wait until kube-proxy programs it.
        cluster_ip = core.read_namespaced_service(APP, namespace).spec.cluster_ip
        open_through_service(f"http://{cluster_ip}/ready", timeout=5).close()
    yield APP


def pods_of(core: Any, namespace: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items)


def test_endpoint_slices_list_the_ready_pods(
    kube_cluster: KubeCluster, namespace: str, tiny_app: str
) -> None:
    version = kube_cluster.newest_version("discovery.k8s.io", ("v1", "v1beta1"))
    # discovery.k8s.io/v1 is served from 1.21 on; the local cluster runs 1.20.
    assert version == ("v1" if kube_cluster.version >= (1, 21) else "v1beta1")
    core: Any = client.CoreV1Api(kube_cluster.api_client)
    pod_ips = {p.status.pod_ip for p in pods_of(core, namespace)}
    assert len(pod_ips) == 2

    slices = dynamic.DynamicClient(kube_cluster.api_client).resources.get(
        api_version=f"discovery.k8s.io/{version}", kind="EndpointSlice"
    )

    def ready_addresses() -> set[str]:
        items = slices.get(namespace=namespace, label_selector=f"kubernetes.io/service-name={tiny_app}").items
        return {
            address
            for item in items
            for endpoint in item.endpoints or []
            if endpoint.conditions.ready
            for address in endpoint.addresses
        }

    assert wait_for("EndpointSlices with both pods", lambda: ready_addresses() == pod_ips, timeout=30)


def test_the_metrics_api_reports_each_pods_cpu(
    kube_cluster: KubeCluster, namespace: str, tiny_app: str
) -> None:
    """metrics.k8s.io (metrics-server behind the aggregator): what `kubectl top` and the HPA read."""
    if "v1beta1" not in kube_cluster.served_versions("metrics.k8s.io"):
        assert not kube_cluster.local, "the local cluster serves no metrics.k8s.io: see metrics-server.log"
        pytest.skip("this cluster serves no metrics.k8s.io (no metrics-server)")
    core: Any = client.CoreV1Api(kube_cluster.api_client)
    names = {p.metadata.name for p in pods_of(core, namespace)}
    custom: Any = client.CustomObjectsApi(kube_cluster.api_client)

    def cpu_by_pod() -> dict[str, str]:
        items = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", namespace, "pods")["items"]
        return {i["metadata"]["name"]: c["usage"]["cpu"] for i in items for c in i["containers"]}

    # A pod appears once metrics-server has scraped it twice (10 s apart here).
    usage = wait_for("pod metrics for both pods", lambda: names <= set(cpu_by_pod()) and cpu_by_pod(), 60, 2)
    assert all(value.endswith(("n", "u", "m")) or value.isdigit() for value in usage.values()), usage
    nodes = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")["items"]
    assert nodes and nodes[0]["usage"]["cpu"] != "0", nodes


def test_service_cluster_ip_is_reachable_from_the_host(
    kube_cluster: KubeCluster, namespace: str, tiny_app: str
) -> None:
    if not kube_cluster.local:
        pytest.skip("ClusterIPs are routed from the host only on the local cluster (kube-proxy runs here)")
    core: Any = client.CoreV1Api(kube_cluster.api_client)
    cluster_ip = core.read_namespaced_service(tiny_app, namespace).spec.cluster_ip
    pods = {p.metadata.name for p in pods_of(core, namespace)}
    answered_by: set[str] = set()
    # kube-proxy programs the Service and each ready endpoint asynchronously, so
    # a pod may join the Service's rules a moment after it turns Ready: keep asking
    # (bounded; longer right after the cluster starts) until both have answered.
    # Each request is a new connection.
    deadline = time.monotonic() + 90
    i = 0
    while answered_by != pods and time.monotonic() < deadline:
        with open_through_service(f"http://{cluster_ip}/hello/{i}", timeout=5) as resp:
            body = json.load(resp)
        assert body["path"] == f"/hello/{i}"
        answered_by.add(body["pod"])
        i += 1
    # kube-proxy spreads connections over both pods (the pod's hostname is its name).
    assert answered_by == pods


def test_deleting_the_deployment_collects_its_children(
    kube_cluster: KubeCluster, namespace: str, tiny_app: str
) -> None:
    apps: Any = client.AppsV1Api(kube_cluster.api_client)
    core: Any = client.CoreV1Api(kube_cluster.api_client)
    assert apps.list_namespaced_replica_set(namespace).items
    apps.delete_namespaced_deployment(tiny_app, namespace)  # background propagation: left to the GC
    # Usually seconds; the 1.20 garbage collector pauses while it resyncs after CRDs come and go
    # (other tests add and remove CRDs), hence the generous limit.
    wait_for(
        "ReplicaSets collected", lambda: not apps.list_namespaced_replica_set(namespace).items, timeout=120
    )
    wait_for("pods collected", lambda: not pods_of(core, namespace), timeout=120)


JOB_SCRIPT = """
import json, os, ssl, urllib.request
# A Service is found through the environment variables kubelet sets (DNS: see DNS_SCRIPT).
url = "http://%s:%s/from-job" % (os.environ["TINY_SERVICE_HOST"], os.environ["TINY_SERVICE_PORT"])
assert json.load(urllib.request.urlopen(url, timeout=5))["path"] == "/from-job"
# The API server, through the `kubernetes` Service, with the pod's service-account token.
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
req = urllib.request.Request(
    "https://%s:%s/api/v1/namespaces/%s/pods/%s" % (
        os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"],
        open(sa + "namespace").read(), os.environ["HOSTNAME"]),
    headers={"Authorization": "Bearer " + open(sa + "token").read()})
try:
    urllib.request.urlopen(req, context=ssl.create_default_context(cafile=sa + "ca.crt"), timeout=5)
except urllib.error.HTTPError as e:
    # The default account may not read pods (RBAC): authenticated, and refused by name.
    assert e.code == 403 and "system:serviceaccount:" in e.read().decode(), e
print("job ok")
"""


def run_job(cluster: KubeCluster, namespace: str, name: str, image: str, script: str) -> tuple[str, str]:
    """Run `script` in a one-pod Job of `image`; its outcome ("succeeded"/"failed") and its log."""
    batch: Any = client.BatchV1Api(cluster.api_client)
    core: Any = client.CoreV1Api(cluster.api_client)
    batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": NON_ROOT,
                        "containers": [tiny_container(image, command=["python3", "-c", script])],
                    },
                },
            },
        },
    )

    def finished() -> str | None:
        status = batch.read_namespaced_job(name, namespace).status
        return "succeeded" if status.succeeded else "failed" if status.failed else None

    outcome = wait_for(f"Job {name} finished", finished, timeout=90)
    pod = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items[0]
    return outcome, core.read_namespaced_pod_log(pod.metadata.name, namespace)  # through kubelet


def test_job_runs_to_completion(
    kube_cluster: KubeCluster, namespace: str, tiny_app: str, tiny_image: str
) -> None:
    outcome, log = run_job(kube_cluster, namespace, "reach", tiny_image, JOB_SCRIPT)
    assert outcome == "succeeded", log
    assert log.strip() == "job ok"


DNS_SCRIPT = """
import json, socket, urllib.request
namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
fqdn = "tiny.%s.svc.cluster.local" % namespace
address = socket.gethostbyname(fqdn)
# The full name, and the short one through the pod's DNS search path.
for url in ("http://%s/by-fqdn" % fqdn, "http://tiny/by-short-name"):
    assert json.load(urllib.request.urlopen(url, timeout=5))["path"].startswith("/by-"), url
print(address)
"""


def test_a_pod_reaches_a_service_by_its_dns_name(
    kube_cluster: KubeCluster, namespace: str, tiny_app: str, tiny_image: str
) -> None:
    outcome, log = run_job(kube_cluster, namespace, "dns", tiny_image, DNS_SCRIPT)
    assert outcome == "succeeded", log
    service = client.CoreV1Api(kube_cluster.api_client).read_namespaced_service(tiny_app, namespace)
    assert log.strip() == service.spec.cluster_ip, "the name resolves to the Service's ClusterIP"


def test_a_crashing_pod_is_restarted(kube_cluster: KubeCluster, namespace: str, tiny_image: str) -> None:
    core: Any = client.CoreV1Api(kube_cluster.api_client)
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "crash"},
            "spec": {
                "restartPolicy": "Always",
                "securityContext": NON_ROOT,
                "containers": [tiny_container(tiny_image, command=["python3", "-c", "raise SystemExit(1)"])],
            },
        },
    )

    def restarted() -> Any:
        statuses = core.read_namespaced_pod("crash", namespace).status.container_statuses or []
        return next((s for s in statuses if s.restart_count >= 1 and s.last_state.terminated), None)

    status = wait_for("a restart after exit 1", restarted, timeout=90)
    assert status.last_state.terminated.exit_code == 1


@pytest.fixture
def widget_crd(kube_cluster: KubeCluster) -> Iterator[tuple[str, str]]:
    """A namespaced test CRD (unique group, so concurrent sessions do not collide), removed after."""
    ext: Any = client.ApiextensionsV1Api(kube_cluster.api_client)
    group = f"e2e-{uuid.uuid4().hex[:8]}.mlendpoints.io"
    name = f"widgets.{group}"
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {"size": {"type": "integer", "minimum": 1}},
                                    },
                                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                                },
                            }
                        },
                    }
                ],
            },
        }
    )

    def established() -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(f"CRD {name} established", established, timeout=30)
    yield group, "widgets"
    ext.delete_custom_resource_definition(name)


def test_a_crd_serves_custom_resources_with_a_status_subresource(
    kube_cluster: KubeCluster, namespace: str, widget_crd: tuple[str, str]
) -> None:
    group, plural = widget_crd
    custom: Any = client.CustomObjectsApi(kube_cluster.api_client)
    args = (group, "v1", namespace, plural)
    custom.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        },
    )
    # The schema is enforced by the API server.
    with pytest.raises(client.ApiException) as invalid:
        custom.create_namespaced_custom_object(
            *args,
            {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": "w2"},
                "spec": {"size": 0},
            },
        )
    assert invalid.value.status == 422

    # With the status subresource, the main resource ignores status and /status ignores spec.
    custom.patch_namespaced_custom_object(*args, "w1", {"status": {"phase": "Ignored"}})
    custom.patch_namespaced_custom_object_status(
        *args, "w1", {"status": {"phase": "Ready"}, "spec": {"size": 9}}
    )
    widget: Any = custom.get_namespaced_custom_object(*args, "w1")
    assert widget["status"] == {"phase": "Ready"}
    assert widget["spec"] == {"size": 3}
    assert widget["metadata"]["generation"] == 1
