"""The router's health report to the operator: a JSON merge patch of one key of the collector-status
ConfigMap, sent by `KubeApi.merge_configmap_data` to a real HTTP server on loopback that records it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from mlendpoints_serving.contract import CollectorHealth, collector_status_configmap_name
from mlendpoints_serving.router.watch import KubeApi


class Recorder(ThreadingHTTPServer):
    requests: list[dict[str, Any]]
    status: int


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.requests.append(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(body),
            }
        )
        answer = json.dumps({"kind": "ConfigMap"}).encode()
        self.send_response(self.server.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def api_server() -> Iterator[Recorder]:
    server = Recorder(("127.0.0.1", 0), Handler)
    server.requests, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def kube_api(server: Recorder) -> KubeApi:
    configuration = kube_client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.api_key = {"authorization": "Bearer sa-token"}
    return KubeApi(kube_client.ApiClient(configuration))


def test_health_is_merge_patched_into_the_pods_key(api_server: Recorder) -> None:
    health = CollectorHealth(ok=False, error="s3://b/r: NoSuchBucket", at="2026-12-02T14:00:00Z", dropped=3)
    name = collector_status_configmap_name("blue")
    kube_api(api_server).merge_configmap_data("ml", name, {"router-abc": health.model_dump_json()})
    (request,) = api_server.requests
    assert request["path"] == "/api/v1/namespaces/ml/configmaps/blue-collector"
    assert request["headers"]["content-type"] == "application/merge-patch+json"
    assert request["headers"]["authorization"] == "Bearer sa-token"
    assert request["body"] == {"data": {"router-abc": health.model_dump_json()}}


def test_a_refused_patch_raises(api_server: Recorder) -> None:
    api_server.status = 403
    with pytest.raises(ApiException):
        kube_api(api_server).merge_configmap_data("ml", "blue-collector", {"pod": "{}"})
