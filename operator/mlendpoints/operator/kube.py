"""The thin apply layer: an async client for the handful of calls the operator makes.

Credentials come from the official client's config loaders (in-cluster or
kubeconfig, with token refresh); requests go over aiohttp (already a kopf
dependency), so the event loop is never blocked. Writes are server-side applies
under one field manager, made only when the live object differs from the
rendered one, so reconciling an unchanged resource writes nothing.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import logging
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from kubernetes import config as kube_config
from kubernetes.client import Configuration
from kubernetes.utils import parse_quantity

from mlendpoints.api.kinds import KINDS
from mlendpoints.operator import metrics

Object = dict[str, Any]
log = logging.getLogger("mlendpoints.operator.kube")

# kind -> plural, for every kind the operator reads or writes.
PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Pod": "pods",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ClusterRoleBinding": "clusterrolebindings",
    "Deployment": "deployments",
    "Job": "jobs",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "NetworkPolicy": "networkpolicies",
    "EndpointSlice": "endpointslices",
    **{k.kind: k.plural for k in KINDS},
}

# Objects that name others of the same converge go in a later wave: a RoleBinding is refused (404)
# while the Role it binds does not exist yet (seen with many endpoints created at once).
APPLY_WAVE: dict[str, int] = {"RoleBinding": 1}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class NamespaceTerminating(KubeError):
    """The namespace is being deleted: nothing can be created in it, and nothing needs to be."""


@dataclass(frozen=True)
class Ref:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Ref:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{PLURALS[kind]}" if namespace else f"{base}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


def resource_of(path: str) -> str:
    """'plural[/subresource]' of an API path, a bounded label (names and namespaces left out)."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts[:-1]:
        i = parts.index("namespaces")
        parts = parts[i + 2 :] if len(parts) > i + 2 else ["namespaces"]
    else:
        parts = parts[3:] if parts[0] == "apis" else parts[2:]
    return "/".join(parts[:1] + parts[2:3])


def _same_scalar(want: Any, have: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if want == have:
        return True
    if isinstance(want, int | str) and isinstance(have, int | str):
        try:  # quantities come back canonical: 0.5 -> "500m", 1 -> "1"
            return bool(parse_quantity(want) == parse_quantity(have))
        except ValueError:
            return False
    return False


def _is_empty(value: Any) -> bool:
    if isinstance(value, dict):
        return all(map(_is_empty, value.values()))
    return value is None or value == []


def is_subset(want: Any, have: Any) -> bool:
    """Does the live object `have` already hold every field of the rendered `want`?

    An empty map or list in `want` matches an absent field: the API server drops empty collections.
    """
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return _is_empty(want)
        return all(
            is_subset(value, have[key]) if key in have else _is_empty(value) for key, value in want.items()
        )
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(is_subset, want, have))
    return _same_scalar(want, have)


def merge_patch(current: Any, desired: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `current` into `desired`; None-valued keys are deletions.

    Merge patches merge maps, so a key gone from `desired` (at any depth) must be sent as null.
    """
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return desired
    patch = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = merge_patch(current[key], value)
    return patch


def load_configuration(kubeconfig: str | None = None) -> Configuration:
    cfg = Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=cfg)
    else:
        kube_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return cfg


class ApiServer(abc.ABC):
    """What the reconcilers ask of the API server: `Kube` over HTTP, or `MemoryKube` (fake_kube.py) for
    unit tests. `ensure` and `ensure_absent`, the only writes of children, are built on the others
    here once, so the fake converges exactly as the real client does."""

    @abc.abstractmethod
    async def get(self, ref: Ref) -> Object | None:
        """The object, or None when it does not exist."""

    @abc.abstractmethod
    async def list(
        self, api_version: str, kind: str, namespace: str, labels: Mapping[str, str]
    ) -> list[Object]: ...

    @abc.abstractmethod
    async def create(self, obj: Object) -> Object | None:
        """Create, or None when it already exists (never overwritten)."""

    @abc.abstractmethod
    async def apply(self, obj: Object) -> Object:
        """Server-side apply under our field manager, taking over fields others changed by hand."""

    @abc.abstractmethod
    async def patch_status(self, ref: Ref, desired: Object, current: Object | None = None) -> None:
        """Make the status `desired`; given the `current` one, send only the difference (nothing if none)."""

    @abc.abstractmethod
    async def delete(self, ref: Ref) -> None:
        """Delete; an object already gone is no error."""

    @abc.abstractmethod
    async def scale(self, ref: Ref, replicas: int) -> None:
        """Set a workload's replicas through its scale subresource (no other field is touched)."""

    async def ensure(self, desired: Object) -> tuple[Object, bool]:
        """The live object after making it hold `desired`; and whether that took a write."""
        live = await self.get(Ref.of(desired))
        if live is not None and is_subset(desired, live):
            return live, False
        return await self.apply(desired), True

    async def ensure_all(self, desired: Iterable[Object]) -> builtins.list[tuple[Object, bool]]:
        """`ensure` each object, concurrently within a wave (APPLY_WAVE), wave after wave."""
        waves: dict[int, list[Object]] = {}
        for obj in desired:
            waves.setdefault(APPLY_WAVE.get(obj["kind"], 0), []).append(obj)
        results: builtins.list[tuple[Object, bool]] = []
        for wave in sorted(waves):
            results += await asyncio.gather(*(self.ensure(obj) for obj in waves[wave]))
        return results

    async def ensure_absent(self, ref: Ref, owner_uid: str) -> bool:
        """Delete a child the resource no longer needs (only one it owns); whether that took a write."""
        live = await self.get(ref)
        if live is None or owner_uid not in {
            o.get("uid") for o in live["metadata"].get("ownerReferences", [])
        }:
            return False
        await self.delete(ref)
        return True


class Kube(ApiServer):
    """Async access to the API server; one per process."""

    def __init__(self, cfg: Configuration, field_manager: str, concurrency: int = 16) -> None:
        self.cfg = cfg
        self.field_manager = field_manager
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self.session = aiohttp.ClientSession(
            base_url=cfg.host.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(ssl=context, limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=30),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        token = self.cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        if method != "GET":
            metrics.API_WRITES.labels(method, resource_of(path)).inc()
            log.debug("%s %s", method, path)
        async with self.session.request(
            method, path.lstrip("/"), data=data, headers=headers, params=params
        ) as resp:
            payload = await resp.read()
            if resp.status >= 400:
                try:
                    status = orjson.loads(payload)
                    message = status.get("message", payload.decode())
                    causes = (status.get("details") or {}).get("causes") or []
                except (orjson.JSONDecodeError, AttributeError):
                    message, causes = payload.decode(errors="replace"), []
                if any(c.get("reason") == "NamespaceTerminating" for c in causes):
                    raise NamespaceTerminating(resp.status, message)
                raise KubeError(resp.status, message)
            return orjson.loads(payload) if payload else None

    async def get(self, ref: Ref) -> Object | None:
        try:
            result: Object = await self.request(
                "GET", resource_path(ref.api_version, ref.kind, ref.namespace, ref.name)
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list(
        self, api_version: str, kind: str, namespace: str, labels: Mapping[str, str]
    ) -> list[Object]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        result = await self.request(
            "GET", resource_path(api_version, kind, namespace), params={"labelSelector": selector}
        )
        items: list[Object] = result.get("items", [])
        return items

    async def create(self, obj: Object) -> Object | None:
        """Create, or None when it already exists (never overwritten)."""
        ref = Ref.of(obj)
        try:
            created: Object = await self.request(
                "POST",
                resource_path(ref.api_version, ref.kind, ref.namespace),
                obj,
                params={"fieldManager": self.field_manager},
            )
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise
        return created

    async def apply(self, obj: Object) -> Object:
        """Server-side apply under our field manager, taking over fields others changed by hand."""
        ref = Ref.of(obj)
        try:
            applied: Object = await self.request(
                "PATCH",
                resource_path(ref.api_version, ref.kind, ref.namespace, ref.name),
                obj,
                content_type="application/apply-patch+yaml",
                params={"fieldManager": self.field_manager, "force": "true"},
            )
        except KubeError as exc:
            # RBAC objects cannot be created by a patch (their storage refuses create-on-update): create them.
            if exc.status != 404 or (created := await self.create(obj)) is None:
                raise
            return created
        return applied

    async def patch_status(self, ref: Ref, desired: Object, current: Object | None = None) -> None:
        """Make the status `desired`; given the `current` one, send only the difference (nothing if none)."""
        if current == desired:
            return
        await self.request(
            "PATCH",
            resource_path(ref.api_version, ref.kind, ref.namespace, ref.name) + "/status",
            {"status": desired if current is None else merge_patch(current, desired)},
            content_type="application/merge-patch+json",
        )

    async def delete(self, ref: Ref) -> None:
        try:
            await self.request("DELETE", resource_path(ref.api_version, ref.kind, ref.namespace, ref.name))
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def scale(self, ref: Ref, replicas: int) -> None:
        await self.request(
            "PATCH",
            resource_path(ref.api_version, ref.kind, ref.namespace, ref.name) + "/scale",
            {"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    async def served_versions(self) -> tuple[set[str], tuple[int, int]]:
        """Group/versions the server serves, and its (major, minor) version."""
        groups = await self.request("GET", "/apis")
        served = {v["groupVersion"] for g in groups["groups"] for v in g["versions"]}
        version = await self.request("GET", "/version")
        minor = int("".join(ch for ch in version["minor"] if ch.isdigit()) or 0)
        return served | {"v1"}, (int(version["major"]), minor)


def owned_by(objs: Iterable[Object], uid: str) -> list[Object]:
    return [o for o in objs if uid in {r.get("uid") for r in o["metadata"].get("ownerReferences", [])}]
