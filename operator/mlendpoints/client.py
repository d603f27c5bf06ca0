"""The cluster as a client sees it: kubeconfig, namespace, the custom resources, keys, the route to an
endpoint's router and scoring through it.

One client for the `mlendpoints` CLI and the MLflow deployments plugin (as KServe keeps
its client SDK apart from its server). Synchronous, on the official Kubernetes client;
the operator has its own async client (`mlendpoints.operator.kube`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import secrets
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from mlendpoints.api.common import API_GROUP, API_VERSION
from mlendpoints.api.kinds import ONLINE_DEPLOYMENT, ONLINE_ENDPOINT, Kind
from mlendpoints.errors import UserError
from mlendpoints.render.common import router_name
from mlendpoints_serving.contract import (
    COMPONENT_ROUTER,
    HEADER_DEPLOYMENT,
    HEADER_SERVED_BY,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_ENDPOINT,
    ROUTER_PORT,
    SECRET_PRIMARY_KEY,
    SECRET_SECONDARY_KEY,
    keys_secret_name,
)

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
KEY_FIELDS = {"primary": SECRET_PRIMARY_KEY, "secondary": SECRET_SECONDARY_KEY}
SCORE_TIMEOUT_S = 60.0
# A CA bundle (PEM) to verify an HTTPS endpoint (spec.tls) with; else the system's (which honours
# SSL_CERT_FILE). `mlendpoints invoke --ca-file` sets it; the MLflow plugin reads it from the environment.
ENV_CA_FILE = "MLENDPOINTS_CA_FILE"


@dataclass(frozen=True)
class Tls:
    """HTTPS to the router, verified: the certificate must name `server_name` (the scoring URI's
    host, <endpoint>.<namespace>.svc.cluster.local), whichever address the connection goes to."""

    server_name: str
    ca_file: str | None = None

    def context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(
                f"cannot read the CA bundle {self.ca_file}: {exc}", f"check {ENV_CA_FILE}"
            ) from exc


class _HttpsConnection(http.client.HTTPConnection):
    """HTTPS over a TCP connection or an open port-forward stream, verifying `tls.server_name`."""

    def __init__(self, route: Route, tls: Tls, timeout: float) -> None:
        super().__init__(route.host, route.port, timeout=timeout)
        self._route, self._context, self._server_name = route, tls.context(), tls.server_name

    def connect(self) -> None:
        sock = self._route.sock or socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)


@dataclass(frozen=True)
class Route:
    """How to reach an endpoint's router from here."""

    host: str
    port: int
    via: str
    sock: socket.socket | None = None  # an open port-forward stream
    tls: Tls | None = None

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.tls is not None:
            return _HttpsConnection(self, self.tls, timeout)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if self.sock is not None:
            conn.sock = self.sock
        return conn


class Cluster:
    """A connection to one namespace of one cluster."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            if kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                config.load_incluster_config()
                self.api = client.ApiClient()
                default_ns = IN_CLUSTER_NAMESPACE.read_text().strip()
            else:
                self.api = config.new_client_from_config(config_file=kubeconfig, context=context)
                _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                if context is not None:
                    contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                    active = next(c for c in contexts if c["name"] == context)
                default_ns = active.get("context", {}).get("namespace") or "default"
        except (ConfigException, FileNotFoundError) as exc:
            raise UserError(
                f"no usable Kubernetes configuration: {exc}",
                "set KUBECONFIG or pass --kubeconfig/--context (kubectl config get-contexts lists them)",
            ) from exc
        self.namespace = namespace or default_ns
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def bearer_token(self) -> str | None:
        """The kubeconfig user's (or the pod's) bearer token, if it authenticates with one: what
        `invoke` sends to an authMode token endpoint by default."""
        value = self.api.configuration.api_key.get("authorization") or self.api.configuration.api_key.get(
            "BearerToken"
        )
        if not value:
            return None
        scheme, _, token = str(value).partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    # --- custom resources ---------------------------------------------------------
    def list_resources(self, kind: Kind) -> list[dict[str, Any]]:
        with not_found_means(
            f"the cluster does not serve {kind.plural}.{API_GROUP}",
            "install mlendpoints (its CRDs and operator) in this cluster first",
        ):
            found: Any = self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, kind.plural
            )
        return list(found.get("items", []))

    def get(self, kind: Kind, name: str) -> dict[str, Any]:
        with not_found_means(
            f"no {kind.kind} {name!r} in namespace {self.namespace}",
            "check the name and -n/--namespace; `mlendpoints status` lists what exists",
        ):
            obj: Any = self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, kind.plural, name
            )
        return dict(obj)

    def create(
        self, kind: Kind, name: str | None, spec: dict[str, Any], generate_name: str | None = None
    ) -> dict[str, Any]:
        """Create the resource; with no `name`, the API server names it `generate_name` + a suffix."""
        metadata = {"name": name} if name else {"generateName": generate_name}
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": kind.kind,
            "metadata": {**metadata, "namespace": self.namespace},
            "spec": spec,
        }
        created: Any = self.custom.create_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, kind.plural, body
        )
        return dict(created)

    def patch_spec(self, kind: Kind, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the spec: keys set to None are removed."""
        patched: Any = self.custom.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, kind.plural, name, {"spec": spec},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        return dict(patched)

    def delete(self, kind: Kind, name: str) -> None:
        self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, kind.plural, name)

    def endpoint(self, name: str) -> dict[str, Any]:
        return self.get(ONLINE_ENDPOINT, name)

    def deployments_of(self, endpoint: str) -> list[dict[str, Any]]:
        return [
            d
            for d in self.list_resources(ONLINE_DEPLOYMENT)
            if d.get("spec", {}).get("endpointName") == endpoint
        ]

    # --- keys -----------------------------------------------------------------------
    def keys(self, endpoint: str) -> dict[str, str]:
        self.endpoint(endpoint)
        with not_found_means(
            f"endpoint {endpoint} has no keys Secret yet ({keys_secret_name(endpoint)})",
            "the operator creates it; check that it runs (mlendpoints status shows conditions)",
        ):
            secret = self.core.read_namespaced_secret(keys_secret_name(endpoint), self.namespace)
        data = secret.data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items() if k in KEY_FIELDS.values()}

    def regenerate_key(self, endpoint: str, key_type: str) -> str:
        """Replace one key; the other stays valid, so clients can move over without downtime."""
        self.keys(endpoint)  # the Secret must exist: only its owner (the operator) creates it
        new = secrets.token_urlsafe(32)
        body = {"data": {KEY_FIELDS[key_type]: base64.b64encode(new.encode()).decode()}}
        self.core.patch_namespaced_secret(keys_secret_name(endpoint), self.namespace, body)
        return new

    # --- pods -----------------------------------------------------------------------
    def pods(self, endpoint: str, deployment: str | None, component: str) -> list[Any]:
        selector = f"{LABEL_ENDPOINT}={endpoint},{LABEL_COMPONENT}={component}"
        if deployment is not None:
            selector += f",{LABEL_DEPLOYMENT}={deployment}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    # --- reaching the router ----------------------------------------------------------
    @contextlib.contextmanager
    def route(self, endpoint: str, ca_file: str | None = None) -> Iterator[Route]:
        """The router of `endpoint`, reached the most direct way that works from here.

        In order: a LoadBalancer address; the Service's ClusterIP when this machine routes to it (in a pod,
        on a node); a port-forward to a ready router pod through the API server. (The API server's service
        proxy drops the Authorization header, so it cannot carry the endpoint key.)
        """
        with not_found_means(
            f"endpoint {endpoint} has no Service yet",
            "the operator creates it; see `mlendpoints status` for the endpoint's conditions",
        ):
            service: Any = self.core.read_namespaced_service(endpoint, self.namespace)
        port = service.spec.ports[0].port
        tls = (
            Tls(f"{endpoint}.{self.namespace}.svc.cluster.local", ca_file or os.environ.get(ENV_CA_FILE))
            if service.spec.ports[0].name == "https"  # spec.tls: the operator names the port so
            else None
        )
        for ingress in (service.status.load_balancer.ingress or []) if service.status.load_balancer else []:
            address = ingress.ip or ingress.hostname
            if address and _reachable(address, port):
                yield Route(address, port, "load balancer", tls=tls)
                return
        cluster_ip = service.spec.cluster_ip
        if cluster_ip and cluster_ip != "None" and _reachable(cluster_ip, port):
            yield Route(cluster_ip, port, "cluster IP", tls=tls)
            return
        with self._port_forward(endpoint) as sock:
            yield Route("localhost", ROUTER_PORT, "port-forward", sock, tls)

    @contextlib.contextmanager
    def _port_forward(self, endpoint: str) -> Iterator[socket.socket]:
        from kubernetes.stream import portforward

        ready = [p for p in self.pods(endpoint, None, COMPONENT_ROUTER) if _pod_ready(p)]
        if not ready:
            raise UserError(
                f"endpoint {endpoint} has no ready router pod ({router_name(endpoint)})",
                "wait for it to be Ready: mlendpoints status",
            )
        forward = portforward(
            self.core.connect_get_namespaced_pod_portforward,
            ready[0].metadata.name,
            self.namespace,
            ports=str(ROUTER_PORT),
        )
        try:
            yield forward.socket(ROUTER_PORT)
        finally:
            forward.close()


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    served_by: str | None  # the deployment that answered (the router's header)


def score(
    route: Route, key: str | None, body: bytes, deployment: str | None, timeout: float = SCORE_TIMEOUT_S
) -> Answer:
    """POST a JSON body to the router's /score, with the endpoint key; `deployment` pins the request."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if deployment:
        headers[HEADER_DEPLOYMENT] = deployment
    conn = route.connection(timeout)
    try:
        conn.request("POST", "/score", body=body, headers=headers)
        resp = conn.getresponse()
        return Answer(resp.status, resp.read().decode(errors="replace"), resp.getheader(HEADER_SERVED_BY))
    finally:
        conn.close()


@contextlib.contextmanager
def not_found_means(message: str, hint: str) -> Iterator[None]:
    """An API 404 inside the block becomes this UserError; other API errors pass through."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 404:
            raise UserError(message, hint) from exc
        raise


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _pod_ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)
