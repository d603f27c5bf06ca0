"""Cluster mode: the router's ConfigMap, keys Secret and EndpointSlices, watched through the Kubernetes API.

Each collection is listed, then watched from the list's resourceVersion, in a
thread of its own with the synchronous kubernetes client; after every event the
thread posts the whole current set of objects to the event loop
(call_soon_threadsafe), so the loop never blocks on the API server and a change
reaches the routing state within one event's latency. A dropped or expired watch
(410 Gone) is followed by a fresh list.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from mlendpoints_serving.contract import LABEL_SERVICE_NAME, ROUTER_CONFIG_KEY, RouterConfig
from mlendpoints_serving.router.config import ConfigError, Keys, keys_from_secret_data, parse_config
from mlendpoints_serving.router.routing import choose_endpointslice_version

log = logging.getLogger("mlendpoints.router.kube")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_TIMEOUT_S = 240  # the API server ends each watch after this; the thread then watches again
RETRY_DELAY_S = 1.0
REVIEW_TIMEOUT_S = 5.0  # a TokenReview or SubjectAccessReview slower than this: 503 to the client

KubeObject = dict[str, Any]


def load_api_client(kubeconfig: str | None = None) -> kube_client.ApiClient:
    """In-cluster service-account credentials in a pod, else the kubeconfig (KUBECONFIG or the argument)."""
    configuration = kube_client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)
    else:
        kube_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return kube_client.ApiClient(configuration)


def default_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


class KubeApi:
    """Raw JSON GETs and watch streams: one code path for every resource and API version."""

    def __init__(self, api: kube_client.ApiClient) -> None:
        self._api = api

    def _request(self, path: str, query: list[tuple[str, Any]], timeout: float | None) -> Any:
        method, url, headers, body, post = self._api.param_serialize(
            "GET",
            path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(method, url, headers, body, post, _request_timeout=timeout)
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response.response)
        return response

    def get(self, path: str, query: list[tuple[str, Any]] | None = None) -> KubeObject:
        response = self._request(path, query or [], timeout=30)
        return orjson.loads(response.read())  # type: ignore[no-any-return]

    def watch(self, path: str, query: list[tuple[str, Any]], resource_version: str) -> Iterator[KubeObject]:
        params = [*query, ("watch", "true"), ("resourceVersion", resource_version)]
        params += [("timeoutSeconds", WATCH_TIMEOUT_S), ("allowWatchBookmarks", "true")]
        response = self._request(path, params, timeout=WATCH_TIMEOUT_S + 30)
        try:
            for line in iter_resp_lines(response.response):
                if line:
                    yield orjson.loads(line)
        finally:
            response.response.release_conn()

    def merge_configmap_data(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Merge keys into a ConfigMap's data (JSON merge patch): the collector's health report."""
        method, url, headers, body, post = self._api.param_serialize(
            "PATCH",
            f"{configmap_path(namespace)}/{name}",
            header_params={"Accept": "application/json", "Content-Type": "application/merge-patch+json"},
            body={"data": data},
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(method, url, headers, body, post, _request_timeout=30)
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response.response)
        response.read()

    def create_review(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a TokenReview or SubjectAccessReview (token auth). On an error status the exception
        says only the status: a review's body holds the token, so it is never put in a message."""
        method, url, headers, data, post = self._api.param_serialize(
            "POST",
            path,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(method, url, headers, data, post, _request_timeout=REVIEW_TIMEOUT_S)
        payload = response.read()
        if not 200 <= response.status < 300:
            raise ReviewError(f"the API server answered {response.status} to {path}")
        return orjson.loads(payload)  # type: ignore[no-any-return]

    def endpointslice_version(self) -> str:
        group = self.get("/apis/discovery.k8s.io")
        return choose_endpointslice_version(v["version"] for v in group.get("versions", []))


class ReviewError(Exception):
    """A review the API server refused or failed (its body left out: it may echo the token)."""


class Watcher(threading.Thread):
    """Lists then watches one collection; posts the full set of objects to the loop after each change."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        query: list[tuple[str, Any]],
        loop: asyncio.AbstractEventLoop,
        on_snapshot: Callable[[list[KubeObject]], None],
    ) -> None:
        super().__init__(name=f"watch {path}", daemon=True)
        self._api = api
        self._path = path
        self._query = query
        self._loop = loop
        self._on_snapshot = on_snapshot
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._list_and_watch()
            except Exception as exc:  # the API server restarting, a network blip: list again shortly
                log.warning("watch of %s failed, listing again: %s", self._path, exc)
                self._stopped.wait(RETRY_DELAY_S)

    def _list_and_watch(self) -> None:
        listed = self._api.get(self._path, self._query)
        objects = {_key(item): item for item in listed.get("items") or []}
        self._post(objects)
        version = listed["metadata"]["resourceVersion"]
        while not self._stopped.is_set():
            for event in self._api.watch(self._path, self._query, version):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")  # 410 Gone included: relist
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    objects.pop(_key(obj), None)
                else:
                    objects[_key(obj)] = obj
                self._post(objects)
                if self._stopped.is_set():
                    return

    def _post(self, objects: dict[str, KubeObject]) -> None:
        snapshot = list(objects.values())
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_snapshot, snapshot)


def _key(obj: KubeObject) -> str:
    return str(obj.get("metadata", {}).get("name"))


# --- turning snapshots into router inputs (pure) --------------------------------
def config_from_configmaps(items: list[KubeObject], name: str) -> RouterConfig | None:
    """The RouterConfig in the ConfigMap's `router.json`; None while the ConfigMap is absent."""
    for item in items:
        if _key(item) == name:
            raw = (item.get("data") or {}).get(ROUTER_CONFIG_KEY)
            if raw is None:
                raise ConfigError(f"ConfigMap {name}: no key {ROUTER_CONFIG_KEY!r}")
            return parse_config(raw, f"ConfigMap {name} key {ROUTER_CONFIG_KEY}")
    return None


def keys_from_secrets(items: list[KubeObject], name: str) -> Keys:
    for item in items:
        if _key(item) == name:
            return keys_from_secret_data(item.get("data"))
    return None, None


def slices_by_service(items: list[KubeObject]) -> dict[str, list[KubeObject]]:
    out: dict[str, list[KubeObject]] = {}
    for item in items:
        service = (item.get("metadata", {}).get("labels") or {}).get(LABEL_SERVICE_NAME)
        if service:
            out.setdefault(service, []).append(item)
    return out


def configmap_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def secret_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets"


def endpointslice_path(namespace: str, version: str) -> str:
    return f"/apis/discovery.k8s.io/{version}/namespaces/{namespace}/endpointslices"


def by_name(name: str) -> list[tuple[str, Any]]:
    return [("fieldSelector", f"metadata.name={name}")]


SLICES_OF_SERVICES: list[tuple[str, Any]] = [("labelSelector", LABEL_SERVICE_NAME)]
