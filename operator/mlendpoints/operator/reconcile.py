"""Reconcile = read, render pure, apply thin, write status only when it changed.

Level-based: each reconcile reads the latest resource (from the watch cache)
and the live children, and converges them. Any event (on the resource, a
deployment of the endpoint, a child or a pod) just schedules a reconcile of the
owner; concurrent triggers of one resource coalesce into one more run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mlendpoints.api.common import GROUP_VERSION
from mlendpoints.api.online import (
    OnlineDeployment,
    OnlineDeploymentSpec,
    OnlineDeploymentStatus,
    OnlineEndpoint,
    OnlineEndpointStatus,
)
from mlendpoints.api.validation import parse_model_uri, schema_errors, validate_deployment
from mlendpoints.operator import metrics, models
from mlendpoints.operator.kube import Kube, Object, Ref
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.operator.status import deployment_status, endpoint_status
from mlendpoints.render.common import config_hash, labels, router_name, server_name
from mlendpoints.render.deployment import COMPONENT_SERVER, ResolvedModel, render_deployment
from mlendpoints.render.discovery import ApiVersions
from mlendpoints.render.endpoint import effective_routing, render_endpoint, render_keys_secret, router_config
from mlendpoints_serving import contract

log = logging.getLogger("mlendpoints.operator")

ENDPOINT = "OnlineEndpoint"
DEPLOYMENT = "OnlineDeployment"
Key = tuple[str, str, str]  # (kind, namespace, name)
MAX_BACKOFF_S = 60.0


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scheduler:
    """Runs at most one reconcile per resource at a time; triggers during a run coalesce into one rerun."""

    def __init__(self, work: Callable[[Key], Awaitable[None]], concurrency: int = 32) -> None:
        self._work = work
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._slots = asyncio.Semaphore(concurrency)

    def trigger(self, key: Key, delay: float = 0.0) -> None:
        if delay > 0:
            timer = self._timers.get(key)
            when = asyncio.get_running_loop().time() + delay
            if timer is None or timer.when() > when:
                if timer is not None:
                    timer.cancel()
                self._timers[key] = asyncio.get_running_loop().call_at(when, self._fire, key)
            return
        if key in self._running:
            self._dirty.add(key)
            return
        self._running[key] = asyncio.create_task(self._run(key))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.trigger(key)

    async def _run(self, key: Key) -> None:
        try:
            while True:
                self._dirty.discard(key)
                async with self._slots:
                    await self._attempt(key)
                if key not in self._dirty:
                    return
        finally:
            del self._running[key]

    async def _attempt(self, key: Key) -> None:
        kind = key[0]
        metrics.RECONCILES.labels(kind).inc()
        started = time.perf_counter()
        try:
            await self._work(key)
            self._failures.pop(key, None)
        except Exception:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
            metrics.ERRORS.labels(kind).inc()
            log.exception("reconcile of %s %s/%s failed; retrying in %.0fs", *key, delay)
            self.trigger(key, delay)
        finally:
            metrics.DURATION.labels(kind).observe(time.perf_counter() - started)

    async def idle(self) -> None:
        """Wait until no reconcile runs (tests and benchmarks)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)


@dataclass
class Store:
    """Latest bodies of the watched custom resources, fed by kopf's watch events."""

    endpoints: dict[tuple[str, str], Object] = field(default_factory=dict)
    deployments: dict[tuple[str, str], Object] = field(default_factory=dict)

    def deployments_of(self, namespace: str, endpoint: str) -> dict[str, Object]:
        return {
            name: body
            for (ns, name), body in self.deployments.items()
            if ns == namespace and body.get("spec", {}).get("endpointName") == endpoint
        }


@dataclass
class Pin:
    """A registry URI resolved to a version, and when."""

    source: str
    model: ResolvedModel
    at: float


class Reconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings, versions: ApiVersions, store: Store) -> None:
        self.kube = kube
        self.settings = settings
        self.render_settings = settings.render_settings()
        self.versions = versions
        self.store = store
        self.scheduler = Scheduler(self.reconcile, concurrency=settings.api_concurrency * 2)
        self._pins: dict[tuple[str, str], Pin] = {}
        # Fingerprint of what each resource's last full pass ensured; while it and the children are
        # unchanged, a reconcile (e.g. for a status change) skips reading the children back.
        self._ensured: dict[Key, str] = {}
        self.children_changed: set[Key] = set()  # fed by child watch events
        self.workloads: dict[tuple[str, str], Object] = {}  # live Deployments by (namespace, name), watched

    async def reconcile(self, key: Key) -> None:
        kind, namespace, name = key
        if kind == ENDPOINT:
            await self.reconcile_endpoint(namespace, name)
        else:
            await self.reconcile_deployment(namespace, name)

    # --- OnlineDeployment ----------------------------------------------------------------------------
    async def _model(
        self, namespace: str, name: str, dep: OnlineDeployment
    ) -> tuple[ResolvedModel | None, str | None]:
        """The pinned model: kept while spec.model is unchanged; re-resolved on modelRefreshInterval."""
        spec = dep.spec
        pin = self._pins.get((namespace, name))
        status = dep.status
        if pin is None and status.modelUri == spec.model and status.resolvedModelVersion:
            # After a restart: the version recorded in status is the one the pods run.
            parsed = parse_model_uri(spec.model)
            if parsed is not None:
                version = status.resolvedModelVersion
                pin = Pin(
                    spec.model,
                    ResolvedModel(models.pinned_uri(parsed[0], version), version),
                    time.monotonic(),
                )
        refresh_due = (
            pin is not None
            and spec.modelRefreshInterval is not None
            and models.needs_registry(spec.model)
            and time.monotonic() - pin.at >= spec.modelRefreshInterval
        )
        if pin is not None and pin.source == spec.model and not refresh_due:
            return pin.model, None
        try:
            model = await models.resolve(spec.model, self.settings.mlflow_tracking_uri)
        except models.ResolveError as exc:
            if pin is not None and pin.source == spec.model:
                return pin.model, str(exc)  # keep serving the version we have
            return None, str(exc)
        self._pins[(namespace, name)] = Pin(spec.model, model, time.monotonic())
        return model, None

    async def _converge(
        self, key: Key, children: list[Object], absent: list[Ref], owner_uid: str, workload: Ref
    ) -> Object | None:
        """Make the children hold what was rendered and the `absent` ones gone; the live `workload`."""
        fingerprint = config_hash({"children": children, "absent": [str(r) for r in absent]})
        if self._ensured.get(key) == fingerprint and key not in self.children_changed:
            cached = self.workloads.get((workload.namespace, workload.name))
            return cached if cached is not None else await self.kube.get(workload)
        self.children_changed.discard(key)
        results = await asyncio.gather(*(self.kube.ensure(c) for c in children))
        await asyncio.gather(*(self.kube.ensure_absent(ref, owner_uid) for ref in absent))
        self._ensured[key] = fingerprint
        return next((live for live, _ in results if Ref.of(live) == workload), None)

    async def reconcile_deployment(self, namespace: str, name: str) -> None:
        body = self.store.deployments.get((namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._pins.pop((namespace, name), None)
            return
        ref = Ref(GROUP_VERSION, DEPLOYMENT, namespace, name)
        previous = _parse_status(OnlineDeploymentStatus, body)
        generation = body["metadata"].get("generation")
        try:
            dep = OnlineDeployment.model_validate({**body, "status": previous.model_dump()})
        except ValidationError as exc:
            spec = OnlineDeploymentSpec.model_construct(
                instanceCount=1, model=body.get("spec", {}).get("model", "")
            )
            status = deployment_status(
                spec, generation, None, None, schema_errors(exc, "spec"), None, [], previous, utcnow()
            )
            await self._write_status(ref, body, status.model_dump(exclude_none=True))
            return
        errors = validate_deployment(name, dep.spec)
        await self._adopt(dep)
        model, resolve_error = (None, None) if errors else await self._model(namespace, name, dep)
        workload_ref = Ref("apps/v1", "Deployment", namespace, server_name(name))
        if model is not None:
            children = render_deployment(dep, model, self.versions, self.render_settings)
            present = {c["kind"] for c in children}
            optional = [
                Ref(self.versions.policy, "PodDisruptionBudget", namespace, server_name(name)),
                Ref(self.versions.autoscaling, "HorizontalPodAutoscaler", namespace, server_name(name)),
            ]
            absent = [ref for ref in optional if ref.kind not in present]
            key = (DEPLOYMENT, namespace, name)
            workload = await self._converge(key, children, absent, dep.metadata["uid"], workload_ref)
        else:
            workload = await self.kube.get(workload_ref)
        pods: list[Object] = []
        wl_status = (workload or {}).get("status", {})
        if workload is not None and wl_status.get("readyReplicas", 0) < wl_status.get("replicas", 0):
            pods = await self.kube.list(
                "v1", "Pod", namespace, labels(dep.spec.endpointName, COMPONENT_SERVER, name)
            )
        status = deployment_status(
            dep.spec, generation, model, resolve_error, errors, workload, pods, previous, utcnow()
        )
        await self._write_status(ref, body, status.model_dump(exclude_none=True))
        if dep.spec.modelRefreshInterval is not None and models.needs_registry(dep.spec.model):
            self.scheduler.trigger((DEPLOYMENT, namespace, name), delay=dep.spec.modelRefreshInterval)

    async def _adopt(self, dep: OnlineDeployment) -> None:
        """Make the deployment a dependent of its endpoint, so deleting the endpoint deletes it."""
        namespace = dep.metadata["namespace"]
        endpoint = self.store.endpoints.get((namespace, dep.spec.endpointName))
        if endpoint is None:
            return
        uid = endpoint["metadata"]["uid"]
        if any(o.get("uid") == uid for o in dep.metadata.get("ownerReferences", [])):
            return
        await self.kube.apply(
            {
                "apiVersion": GROUP_VERSION,
                "kind": DEPLOYMENT,
                "metadata": {
                    "name": dep.metadata["name"],
                    "namespace": namespace,
                    "ownerReferences": [
                        {
                            "apiVersion": GROUP_VERSION,
                            "kind": ENDPOINT,
                            "name": dep.spec.endpointName,
                            "uid": uid,
                        }
                    ],
                },
            }
        )

    # --- OnlineEndpoint ------------------------------------------------------------------------------
    async def reconcile_endpoint(self, namespace: str, name: str) -> None:
        body = self.store.endpoints.get((namespace, name))
        if body is None:
            return
        ref = Ref(GROUP_VERSION, ENDPOINT, namespace, name)
        previous = _parse_status(OnlineEndpointStatus, body)
        generation = body["metadata"].get("generation")
        deleting = bool(body["metadata"].get("deletionTimestamp"))
        try:
            endpoint = OnlineEndpoint.model_validate({**body, "status": previous.model_dump()})
        except ValidationError as exc:
            log.warning("OnlineEndpoint %s/%s is invalid: %s", namespace, name, schema_errors(exc))
            return
        dep_bodies = self.store.deployments_of(namespace, name)
        dep_specs, dep_statuses = {}, {}
        for dep_name, dep_body in dep_bodies.items():
            try:
                dep_specs[dep_name] = OnlineDeploymentSpec.model_validate(dep_body.get("spec", {}))
            except ValidationError:
                continue  # an invalid deployment takes no traffic; its own status says why
            dep_statuses[dep_name] = _parse_status(OnlineDeploymentStatus, dep_body)
        router = None
        routing = effective_routing(endpoint.spec, dep_specs, None)
        if not deleting:
            if routing.errors:  # keep what the router applies now, if it is still valid
                configmap_ref = Ref("v1", "ConfigMap", namespace, contract.router_configmap_name(name))
                applied = _router_config(await self.kube.get(configmap_ref))
                routing = effective_routing(endpoint.spec, dep_specs, applied)
            config = router_config(name, namespace, endpoint.spec, dep_specs, routing)
            key = (ENDPOINT, namespace, name)
            if self._ensured.get(key) is None or key in self.children_changed:
                await self._ensure_keys(endpoint)
            children = render_endpoint(endpoint, config, self.versions, self.render_settings)
            router_ref = Ref("apps/v1", "Deployment", namespace, router_name(name))
            router = await self._converge(key, children, [], endpoint.metadata["uid"], router_ref)
        status = endpoint_status(
            name, namespace, generation, routing, dep_statuses, router, previous, deleting, utcnow()
        )
        await self._write_status(ref, body, status.model_dump(exclude_none=True))
        # Deployments created before their endpoint are adopted now.
        for dep_name, dep_body in dep_bodies.items():
            owners = {o.get("uid") for o in dep_body["metadata"].get("ownerReferences", [])}
            if body["metadata"]["uid"] not in owners:
                self.scheduler.trigger((DEPLOYMENT, namespace, dep_name))

    async def _ensure_keys(self, endpoint: OnlineEndpoint) -> None:
        namespace, name = endpoint.metadata["namespace"], endpoint.metadata["name"]
        if await self.kube.get(Ref("v1", "Secret", namespace, contract.keys_secret_name(name))) is None:
            secret = render_keys_secret(endpoint, secrets.token_urlsafe(32), secrets.token_urlsafe(32))
            await self.kube.create(secret)

    async def _write_status(self, ref: Ref, body: Object, status: Object) -> None:
        await self.kube.patch_status(ref, status, current=body.get("status") or {})


def _parse_status(model: type[Any], body: Object) -> Any:
    try:
        return model.model_validate(body.get("status") or {})
    except ValidationError:
        return model()


def _router_config(configmap: Object | None) -> contract.RouterConfig | None:
    if configmap is None:
        return None
    try:
        return contract.RouterConfig.model_validate_json(
            configmap.get("data", {}).get(contract.ROUTER_CONFIG_KEY, "")
        )
    except ValidationError:
        return None
