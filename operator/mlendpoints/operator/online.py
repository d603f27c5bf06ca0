"""OnlineEndpoint and OnlineDeployment: the reconciler, and its kopf wiring (`register`).

Reconcile = read, render pure, apply thin, write status only when it changed.
Level-based: each reconcile reads the latest resource (from the store, fed by the
watch) and the live children, and converges them. Any event (on the resource, a
deployment of the endpoint, a child or a pod) just schedules a reconcile of the
owner; concurrent triggers of one resource coalesce into one more run.

Reconciles run from watch events (`on.event`), never through kopf's create/update
state machine: that keeps kopf from writing progress annotations, diff-bases or
finalizers, so an operator restart writes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from mlendpoints.api.common import API_GROUP, API_VERSION, GROUP_VERSION
from mlendpoints.api.kinds import ONLINE_DEPLOYMENT, ONLINE_ENDPOINT
from mlendpoints.api.online import (
    OnlineDeployment,
    OnlineDeploymentSpec,
    OnlineDeploymentStatus,
    OnlineEndpoint,
    OnlineEndpointStatus,
)
from mlendpoints.api.validation import parse_model_uri, schema_errors, validate_deployment
from mlendpoints.operator import models
from mlendpoints.operator.kube import ApiServer, Object, Ref
from mlendpoints.operator.scaler import RouterPods, Scaler
from mlendpoints.operator.scheduler import Key, Scheduler
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.operator.status import (
    collector_condition,
    deployment_status,
    endpoint_status,
    is_true,
    parse_status,
    utcnow,
)
from mlendpoints.operator.store import Store
from mlendpoints.render.common import config_hash, labels, router_name, server_name
from mlendpoints.render.deployment import ResolvedModel, render_deployment
from mlendpoints.render.discovery import ApiVersions
from mlendpoints.render.endpoint import (
    collecting,
    effective_routing,
    render_endpoint,
    render_keys_secret,
    router_config,
)
from mlendpoints.render.router_auth import (
    CLUSTER_ROLE_BINDING,
    RBAC_V1,
    endpoint_of_binding,
    render_router_auth_binding,
    router_auth_binding_name,
)
from mlendpoints_serving import contract

log = logging.getLogger("mlendpoints.operator")

ENDPOINT = ONLINE_ENDPOINT.kind
DEPLOYMENT = ONLINE_DEPLOYMENT.kind
MANAGED = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY}
Resolver = Callable[[str, str | None], Awaitable[ResolvedModel]]  # (model URI, tracking URI) -> pinned


@dataclass
class Pin:
    """A registry URI resolved to a version, and when."""

    source: str
    model: ResolvedModel
    at: float


class Reconciler:
    """Converges OnlineEndpoints and OnlineDeployments to their rendered children and writes their status.

    `resolve` pins registry URIs (models.resolve, against MLflow) and `clock` times the
    pins' modelRefreshInterval (time.monotonic); both can be given for tests.
    """

    def __init__(
        self,
        kube: ApiServer,
        settings: OperatorSettings,
        versions: ApiVersions,
        store: Store,
        resolve: Resolver = models.resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.render_settings = settings.render_settings()
        self.versions = versions
        self.store = store
        self.scheduler = Scheduler(self.reconcile, concurrency=settings.api_concurrency * 2)
        self._resolve = resolve
        self._clock = clock
        self._pins: dict[tuple[str, str], Pin] = {}
        # Fingerprint of what each resource's last full pass ensured; while it and the children are
        # unchanged, a reconcile (e.g. for a status change) skips reading the children back.
        self._ensured: dict[Key, str] = {}
        self.children_changed: set[Key] = set()  # fed by child watch events
        self.workloads: dict[tuple[str, str], Object] = {}  # live Deployments by (namespace, name), watched
        self.router_pods = RouterPods()  # ready router pods, watched: the scaler scrapes them
        # authMode token: the router-auth ClusterRoleBindings that exist, by endpoint (watched).
        self.auth_bindings: set[tuple[str, str]] = set()
        self.scaler = Scaler(kube, self.router_pods, self.workloads, settings.scale_interval_seconds)

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
        if pin is None and (pin := self._recorded_pin(dep)) is not None:
            self._pins[(namespace, name)] = pin  # its refresh interval runs from now
        refresh_due = (
            pin is not None
            and spec.modelRefreshInterval is not None
            and models.needs_registry(spec.model)
            and self._clock() - pin.at >= spec.modelRefreshInterval
        )
        if pin is not None and pin.source == spec.model and not refresh_due:
            return pin.model, None
        try:
            model = await self._resolve(spec.model, self.settings.mlflow_tracking_uri)
        except models.ResolveError as exc:
            if pin is not None and pin.source == spec.model:
                log.warning(
                    "OnlineDeployment %s/%s: refreshing %s failed, still serving version %s: %s",
                    namespace, name, spec.model, pin.model.version, exc,
                )  # fmt: skip
                return pin.model, str(exc)  # keep serving the version we have
            return None, str(exc)
        self._pins[(namespace, name)] = Pin(spec.model, model, self._clock())
        return model, None

    def _recorded_pin(self, dep: OnlineDeployment) -> Pin | None:
        """After a restart: the version the status records, which the pods run, while it was resolved
        from this very spec (status.modelUri is the pinned URI, `models:/NAME/VERSION`, never spec.model
        itself when that names an alias or /latest)."""
        status, parsed = dep.status, parse_model_uri(dep.spec.model)
        version = status.resolvedModelVersion
        if (
            parsed is None
            or version is None
            or status.observedGeneration != dep.metadata.get("generation")
            or not is_true(status.conditions, "ModelResolved")
            or status.modelUri != models.pinned_uri(parsed[0], version)
        ):
            return None
        return Pin(dep.spec.model, ResolvedModel(status.modelUri, version), self._clock())

    async def _converge(
        self, key: Key, children: list[Object], absent: list[Ref], owner_uid: str, workload: Ref
    ) -> Object | None:
        """Make the children hold what was rendered and the `absent` ones gone; the live `workload`."""
        fingerprint = config_hash({"children": children, "absent": [str(r) for r in absent]})
        if self._ensured.get(key) == fingerprint and key not in self.children_changed:
            cached = self.workloads.get((workload.namespace, workload.name))
            return cached if cached is not None else await self.kube.get(workload)
        self.children_changed.discard(key)
        results = await self.kube.ensure_all(children)
        await asyncio.gather(*(self.kube.ensure_absent(ref, owner_uid) for ref in absent))
        self._ensured[key] = fingerprint
        return next((live for live, _ in results if Ref.of(live) == workload), None)

    async def reconcile_deployment(self, namespace: str, name: str) -> None:
        body = self.store.get(DEPLOYMENT, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._pins.pop((namespace, name), None)
            return
        ref = Ref(GROUP_VERSION, DEPLOYMENT, namespace, name)
        previous = parse_status(OnlineDeploymentStatus, body)
        generation = body["metadata"].get("generation")
        try:
            dep = OnlineDeployment.model_validate({**body, "status": previous.model_dump()})
        except ValidationError as exc:
            spec = OnlineDeploymentSpec.model_construct(
                instanceCount=1, model=body.get("spec", {}).get("model", "")
            )
            status = deployment_status(
                spec=spec,
                generation=generation,
                model=None,
                resolve_error=None,
                validation_errors=schema_errors(exc, "spec"),
                workload=None,
                pods=[],
                previous=previous,
                now=utcnow(),
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
            if self.render_settings.network_policies:
                # Opted out, the operator leaves NetworkPolicies alone (and needs no RBAC for them).
                optional.append(Ref("networking.k8s.io/v1", "NetworkPolicy", namespace, server_name(name)))
            absent = [ref for ref in optional if ref.kind not in present]
            key = (DEPLOYMENT, namespace, name)
            workload = await self._converge(key, children, absent, dep.metadata["uid"], workload_ref)
        else:
            workload = await self.kube.get(workload_ref)
        pods: list[Object] = []
        wl_status = (workload or {}).get("status", {})
        if workload is not None and wl_status.get("readyReplicas", 0) < wl_status.get("replicas", 0):
            pods = await self.kube.list(
                "v1", "Pod", namespace, labels(dep.spec.endpointName, contract.COMPONENT_SERVER, name)
            )
        collector = None
        if dep.spec.dataCollector is not None and dep.spec.dataCollector.enabled:
            # The router pods report their destination's health in this ConfigMap (level-based).
            name_ = contract.collector_status_configmap_name(name)
            reports = await self.kube.get(Ref("v1", "ConfigMap", namespace, name_))
            data = (reports or {}).get("data") or {}
            collector = collector_condition(data, dt.datetime.now(dt.UTC), generation)
        status = deployment_status(
            spec=dep.spec,
            generation=generation,
            model=model,
            resolve_error=resolve_error,
            validation_errors=errors,
            workload=workload,
            pods=pods,
            previous=previous,
            now=utcnow(),
            collector=collector,
        )
        await self._write_status(ref, body, status.model_dump(exclude_none=True))
        if dep.spec.modelRefreshInterval is not None and models.needs_registry(dep.spec.model):
            self.scheduler.trigger((DEPLOYMENT, namespace, name), delay=dep.spec.modelRefreshInterval)

    async def _adopt(self, dep: OnlineDeployment) -> None:
        """Make the deployment a dependent of its endpoint, so deleting the endpoint deletes it."""
        namespace = dep.metadata["namespace"]
        endpoint = self.store.get(ENDPOINT, namespace, dep.spec.endpointName)
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
        body = self.store.get(ENDPOINT, namespace, name)
        if body is None:
            return
        ref = Ref(GROUP_VERSION, ENDPOINT, namespace, name)
        previous = parse_status(OnlineEndpointStatus, body)
        generation = body["metadata"].get("generation")
        deleting = bool(body["metadata"].get("deletionTimestamp"))
        try:
            endpoint = OnlineEndpoint.model_validate({**body, "status": previous.model_dump()})
        except ValidationError as exc:
            log.warning("OnlineEndpoint %s/%s is invalid: %s", namespace, name, schema_errors(exc))
            return
        dep_bodies = self.store.attached_to(DEPLOYMENT, namespace, name)
        dep_specs, dep_statuses = {}, {}
        for dep_name, dep_body in dep_bodies.items():
            try:
                dep_specs[dep_name] = OnlineDeploymentSpec.model_validate(dep_body.get("spec", {}))
            except ValidationError:
                continue  # an invalid deployment takes no traffic; its own status says why
            dep_statuses[dep_name] = parse_status(OnlineDeploymentStatus, dep_body)
        router = None
        routing = effective_routing(endpoint.spec, dep_specs, None)
        if not deleting:
            if routing.errors:  # keep what the router applies now, if it is still valid
                configmap_ref = Ref("v1", "ConfigMap", namespace, contract.router_configmap_name(name))
                applied = _router_config(await self.kube.get(configmap_ref))
                routing = effective_routing(endpoint.spec, dep_specs, applied)
            model_versions = {dep: st.resolvedModelVersion for dep, st in dep_statuses.items()}
            config = router_config(name, namespace, endpoint.spec, dep_specs, routing, model_versions)
            key = (ENDPOINT, namespace, name)
            if self._ensured.get(key) is None or key in self.children_changed:
                await self._ensure_keys(endpoint)
            children = render_endpoint(
                endpoint, config, self.versions, self.render_settings, collecting(dep_specs)
            )
            if endpoint.spec.authMode == "token":
                cluster_role = self.settings.router_auth_cluster_role
                children.append(render_router_auth_binding(namespace, name, cluster_role))
            router_ref = Ref("apps/v1", "Deployment", namespace, router_name(name))
            router = await self._converge(key, children, [], endpoint.metadata["uid"], router_ref)
        if (deleting or endpoint.spec.authMode != "token") and (namespace, name) in self.auth_bindings:
            await self.delete_auth_binding(namespace, name)
        status = endpoint_status(
            name=name,
            namespace=namespace,
            generation=generation,
            routing=routing,
            deployments=dep_statuses,
            router=router,
            previous=previous,
            deleting=deleting,
            now=utcnow(),
            tls_secret=endpoint.spec.tls.secretName if endpoint.spec.tls else None,
        )
        await self._write_status(ref, body, status.model_dump(exclude_none=True))
        # Deployments created before their endpoint are adopted now.
        for dep_name, dep_body in dep_bodies.items():
            owners = {o.get("uid") for o in dep_body["metadata"].get("ownerReferences", [])}
            if body["metadata"]["uid"] not in owners:
                self.scheduler.trigger((DEPLOYMENT, namespace, dep_name))

    async def delete_auth_binding(self, namespace: str, name: str) -> None:
        """The endpoint is gone or no longer in token mode: its router loses the review verbs."""
        binding = router_auth_binding_name(namespace, name)
        await self.kube.delete(Ref(RBAC_V1, CLUSTER_ROLE_BINDING, "", binding))
        self.auth_bindings.discard((namespace, name))
        log.info("deleted ClusterRoleBinding %s (endpoint %s/%s)", binding, namespace, name)

    async def delete_orphaned_auth_bindings(self) -> None:
        """Bindings whose endpoint is gone (deleted while the operator was down, say); run once the
        endpoints have been listed."""
        for namespace, name in sorted(self.auth_bindings):
            if self.store.get(ENDPOINT, namespace, name) is None:
                await self.delete_auth_binding(namespace, name)

    def watches(self, namespace: str) -> bool:
        return not self.settings.namespaces or namespace in self.settings.namespaces

    async def auth_binding_event(self, obj: Object, deleted: bool, initial: bool = False) -> None:
        """A router-auth ClusterRoleBinding changed: put back a hand edit, delete an orphan."""
        owner = endpoint_of_binding(obj)
        if owner is None or not self.watches(owner[0]):
            return
        if deleted:
            self.auth_bindings.discard(owner)
        else:
            self.auth_bindings.add(owner)
        if initial:
            # The start-up listing may come before the endpoints' own: an endpoint not seen yet is not
            # gone. Its own listing reconciles it; true orphans go in the resync (delete_orphaned_...).
            return
        body = self.store.get(ENDPOINT, *owner)
        if body is None:
            if not deleted:  # its endpoint is gone (deleted while the operator was down, say)
                await self.delete_auth_binding(*owner)
            return
        key = (ENDPOINT, *owner)
        self.children_changed.add(key)
        self.scheduler.trigger(key)

    async def _ensure_keys(self, endpoint: OnlineEndpoint) -> None:
        namespace, name = endpoint.metadata["namespace"], endpoint.metadata["name"]
        if await self.kube.get(Ref("v1", "Secret", namespace, contract.keys_secret_name(name))) is None:
            secret = render_keys_secret(endpoint, secrets.token_urlsafe(32), secrets.token_urlsafe(32))
            await self.kube.create(secret)

    async def _write_status(self, ref: Ref, body: Object, status: Object) -> None:
        await self.kube.patch_status(ref, status, current=body.get("status") or {})


def _router_config(configmap: Object | None) -> contract.RouterConfig | None:
    if configmap is None:
        return None
    try:
        return contract.RouterConfig.model_validate_json(
            configmap.get("data", {}).get(contract.ROUTER_CONFIG_KEY, "")
        )
    except ValidationError:
        return None


# --- kopf wiring ------------------------------------------------------------------------------------
def _essence(body: Any) -> dict[str, Any]:
    """What a change must touch to need a reconcile of the resource itself (not just its status)."""
    meta = body.get("metadata", {})
    return {
        "spec": body.get("spec") or {},
        "labels": meta.get("labels"),
        "ownerReferences": meta.get("ownerReferences"),
        "deletionTimestamp": meta.get("deletionTimestamp"),
    }


def child_kinds(versions: ApiVersions, network_policies: bool = True) -> list[tuple[str, str]]:
    """(apiVersion, plural) of every child kind watched to put back hand edits and deletions."""
    return [
        ("v1", "configmaps"),
        ("v1", "secrets"),
        ("v1", "services"),
        ("v1", "serviceaccounts"),
        ("rbac.authorization.k8s.io/v1", "roles"),
        ("rbac.authorization.k8s.io/v1", "rolebindings"),
        ("apps/v1", "deployments"),
        (versions.policy, "poddisruptionbudgets"),
        (versions.autoscaling, "horizontalpodautoscalers"),
        *([("networking.k8s.io/v1", "networkpolicies")] if network_policies else []),
    ]


def owner_of(labels: Any) -> tuple[str, str] | None:
    """(kind, name) of the online resource a child belongs to, from its labels."""
    component = labels.get(contract.LABEL_COMPONENT)
    if component == contract.COMPONENT_SERVER and labels.get(contract.LABEL_DEPLOYMENT):
        return DEPLOYMENT, labels[contract.LABEL_DEPLOYMENT]
    if component == contract.COMPONENT_ROUTER and labels.get(contract.LABEL_ENDPOINT):
        return ENDPOINT, labels[contract.LABEL_ENDPOINT]
    return None


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    """The online kinds' handlers: the store's feed, reconcile triggers, child watches and the resync."""
    store, scheduler = reconciler.store, reconciler.scheduler

    # The store is fed by index handlers: kopf runs no other handler before every indexed resource's
    # initial listing is in, so no endpoint is ever reconciled without knowing all its deployments
    # (which would route nothing for a moment after a restart).
    @kopf.index(API_GROUP, API_VERSION, "onlineendpoints", registry=registry)
    def endpoints_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        store.put(ENDPOINT, namespace or "", name, body)

    @kopf.index(API_GROUP, API_VERSION, "onlinedeployments", registry=registry)
    def deployments_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        store.put(DEPLOYMENT, namespace or "", name, body)

    handled: dict[Key, dict[str, Any]] = {}  # essence last scheduled, per resource

    def changed(kind: str, namespace: str, name: str, body: Any) -> bool:
        essence = _essence(body)
        if handled.get((kind, namespace, name)) == essence:
            return False
        handled[(kind, namespace, name)] = essence
        return True

    @kopf.on.event(API_GROUP, API_VERSION, "onlineendpoints", registry=registry)
    async def endpoint_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
        namespace = namespace or ""
        if event["type"] == "DELETED":
            store.drop(ENDPOINT, namespace, name)
            handled.pop((ENDPOINT, namespace, name), None)
            if (namespace, name) in reconciler.auth_bindings:
                await reconciler.delete_auth_binding(namespace, name)
        elif changed(ENDPOINT, namespace, name, event["object"]):
            scheduler.trigger((ENDPOINT, namespace, name))

    @kopf.on.event(API_GROUP, API_VERSION, "onlinedeployments", registry=registry)
    async def deployment_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
        namespace = namespace or ""
        endpoint = event["object"].get("spec", {}).get("endpointName")
        left = handled.get((DEPLOYMENT, namespace, name), {}).get("spec", {}).get("endpointName")
        if event["type"] == "DELETED":
            store.drop(DEPLOYMENT, namespace, name)
            handled.pop((DEPLOYMENT, namespace, name), None)
        elif changed(DEPLOYMENT, namespace, name, event["object"]):
            scheduler.trigger((DEPLOYMENT, namespace, name))
        # The endpoint aggregates its deployments' status and routes to them: any change concerns it
        # (and the one it left, when endpointName changed).
        for endpoint_name in {endpoint, left}:
            if endpoint_name and store.get(ENDPOINT, namespace, endpoint_name) is not None:
                scheduler.trigger((ENDPOINT, namespace, endpoint_name))

    generations: dict[str, int] = {}  # metadata.generation last seen per child uid

    async def child_event(event: kopf.RawEvent, namespace: str | None, labels: Any, **_: Any) -> None:
        obj, namespace = event["object"], namespace or ""
        meta: Any = obj["metadata"]
        component = (labels or {}).get(contract.LABEL_COMPONENT)
        if obj.get("kind") == "Pod" and component == contract.COMPONENT_ROUTER:
            reconciler.router_pods.update(obj, deleted=event["type"] == "DELETED")
        if obj.get("kind") == "Deployment":
            if event["type"] == "DELETED":
                reconciler.workloads.pop((namespace, meta["name"]), None)
            else:
                reconciler.workloads[(namespace, meta["name"])] = copy.deepcopy(dict(obj))
        # A child's own spec changed (a hand edit, or our write coming back) when its generation moved;
        # kinds without a generation have no status, so any change is one. Pods only report status.
        generation = meta.get("generation")
        spec_changed = (
            event["type"] == "DELETED" or generation is None or generations.get(meta["uid"]) != generation
        )
        if generation is not None:
            generations[meta["uid"]] = generation
        if event["type"] == "DELETED":
            generations.pop(meta["uid"], None)
        owner = owner_of(labels)
        if event["type"] is None or owner is None:
            return  # the initial listing: the owners are reconciled on their own initial listing
        key = (owner[0], namespace, owner[1])
        if spec_changed and obj.get("kind") != "Pod":
            reconciler.children_changed.add(key)
        scheduler.trigger(key)

    kinds = child_kinds(reconciler.versions, reconciler.render_settings.network_policies)
    for api_version, plural in [*kinds, ("v1", "pods")]:
        group, _, version = api_version.rpartition("/")
        kopf.on.event(group, version, plural, labels=MANAGED, registry=registry)(child_event)

    # Cluster-scoped, so not owned by the endpoint (see render/router_auth.py): watched to delete orphans.
    @kopf.on.event(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        labels={**MANAGED, contract.LABEL_COMPONENT: contract.COMPONENT_ROUTER_AUTH},
        registry=registry,
    )
    async def auth_binding_event(event: kopf.RawEvent, **_: Any) -> None:
        await reconciler.auth_binding_event(
            dict(event["object"]), deleted=event["type"] == "DELETED", initial=event["type"] is None
        )

    @kopf.on.startup(registry=registry, id="online-resync")
    async def start_resync(**_: Any) -> None:
        asyncio.get_running_loop().create_task(resync(reconciler))
        asyncio.get_running_loop().create_task(reconciler.scaler.run(lambda: store.of(DEPLOYMENT)))


async def resync(reconciler: Reconciler) -> None:
    """Level-based safety net: every so often, reconcile everything (writes only what drifted)."""
    while True:
        await asyncio.sleep(reconciler.settings.resync_seconds)
        for namespace, name in list(reconciler.store.of(DEPLOYMENT)):
            reconciler.scheduler.trigger((DEPLOYMENT, namespace, name))
        for namespace, name in list(reconciler.store.of(ENDPOINT)):
            reconciler.scheduler.trigger((ENDPOINT, namespace, name))
        await reconciler.delete_orphaned_auth_bindings()
