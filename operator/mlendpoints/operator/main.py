"""The operator process: kopf wiring, settings, health, metrics, peering.

kopf is used for what it is good at (watching, peering, admission, liveness).
Reconciles run from watch events (`on.event`), never through kopf's
create/update state machine: that keeps kopf from writing progress
annotations, diff-bases or finalizers, so an operator restart writes nothing.
Children are garbage-collected through owner references; no finalizer is needed.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf
import prometheus_client

from mlendpoints.api.common import API_GROUP, API_VERSION
from mlendpoints.operator import batch, webhook
from mlendpoints.operator.kube import Kube, load_configuration
from mlendpoints.operator.reconcile import DEPLOYMENT, ENDPOINT, Reconciler, Store
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.render.deployment import COMPONENT_SERVER
from mlendpoints.render.discovery import ApiVersions
from mlendpoints.render.endpoint import COMPONENT_ROUTER
from mlendpoints_serving import contract

log = logging.getLogger("mlendpoints.operator")
MANAGED = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY}
PREFIX = "mlendpoints.io"


def _essence(body: Any) -> dict[str, Any]:
    """What a change must touch to need a reconcile of the resource itself (not just its status)."""
    meta = body.get("metadata", {})
    return {
        "spec": body.get("spec") or {},
        "labels": meta.get("labels"),
        "ownerReferences": meta.get("ownerReferences"),
        "deletionTimestamp": meta.get("deletionTimestamp"),
    }


def child_kinds(versions: ApiVersions) -> list[tuple[str, str]]:
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
    ]


def build_registry(
    reconciler: Reconciler, settings: OperatorSettings, webhook_cert_dir: str | None = None
) -> kopf.OperatorRegistry:
    """All handlers; the admission webhook when `webhook_cert_dir` (its certificate) is given."""
    registry = kopf.OperatorRegistry()
    store, scheduler = reconciler.store, reconciler.scheduler

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    # The store is fed by index handlers: kopf runs no other handler before every indexed resource's
    # initial listing is in, so no endpoint is ever reconciled without knowing all its deployments
    # (which would route nothing for a moment after a restart).
    @kopf.index(API_GROUP, API_VERSION, "onlineendpoints", registry=registry)
    def endpoints_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        store.endpoints[(namespace or "", name)] = copy.deepcopy(dict(body))

    @kopf.index(API_GROUP, API_VERSION, "onlinedeployments", registry=registry)
    def deployments_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        store.deployments[(namespace or "", name)] = copy.deepcopy(dict(body))

    handled: dict[tuple[str, str, str], dict[str, Any]] = {}  # essence last scheduled, per resource

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
            store.endpoints.pop((namespace, name), None)
            handled.pop((ENDPOINT, namespace, name), None)
        elif changed(ENDPOINT, namespace, name, event["object"]):
            scheduler.trigger((ENDPOINT, namespace, name))

    @kopf.on.event(API_GROUP, API_VERSION, "onlinedeployments", registry=registry)
    async def deployment_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
        namespace = namespace or ""
        endpoint = event["object"].get("spec", {}).get("endpointName")
        left = handled.get((DEPLOYMENT, namespace, name), {}).get("spec", {}).get("endpointName")
        if event["type"] == "DELETED":
            store.deployments.pop((namespace, name), None)
            handled.pop((DEPLOYMENT, namespace, name), None)
        elif changed(DEPLOYMENT, namespace, name, event["object"]):
            scheduler.trigger((DEPLOYMENT, namespace, name))
        # The endpoint aggregates its deployments' status and routes to them: any change concerns it
        # (and the one it left, when endpointName changed).
        for endpoint_name in {endpoint, left}:
            if endpoint_name and (namespace, endpoint_name) in store.endpoints:
                scheduler.trigger((ENDPOINT, namespace, endpoint_name))

    def owner_of(labels: Any) -> tuple[str, str] | None:
        component = labels.get(contract.LABEL_COMPONENT)
        if component == COMPONENT_SERVER and labels.get(contract.LABEL_DEPLOYMENT):
            return DEPLOYMENT, labels[contract.LABEL_DEPLOYMENT]
        if component == COMPONENT_ROUTER and labels.get(contract.LABEL_ENDPOINT):
            return ENDPOINT, labels[contract.LABEL_ENDPOINT]
        return None

    generations: dict[str, int] = {}  # metadata.generation last seen per child uid

    async def child_event(event: kopf.RawEvent, namespace: str | None, labels: Any, **_: Any) -> None:
        obj, namespace = event["object"], namespace or ""
        meta: Any = obj["metadata"]
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

    for api_version, plural in [*child_kinds(reconciler.versions), ("v1", "pods")]:
        group, _, version = api_version.rpartition("/")
        kopf.on.event(group, version, plural, labels=MANAGED, registry=registry)(child_event)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        if webhook_cert_dir is not None:
            webhook.configure(settings, reconciler.settings, webhook_cert_dir)
        asyncio.get_running_loop().create_task(resync(reconciler))

    if webhook_cert_dir is not None:
        webhook.register(registry, store)
    return registry


async def resync(reconciler: Reconciler) -> None:
    """Level-based safety net: every so often, reconcile everything (writes only what drifted)."""
    while True:
        await asyncio.sleep(reconciler.settings.resync_seconds)
        for namespace, name in list(reconciler.store.deployments):
            reconciler.scheduler.trigger((DEPLOYMENT, namespace, name))
        for namespace, name in list(reconciler.store.endpoints):
            reconciler.scheduler.trigger((ENDPOINT, namespace, name))


def configure_kopf(kopf_settings: kopf.OperatorSettings) -> None:
    kopf_settings.persistence.finalizer = f"{PREFIX}/finalizer"
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    kopf_settings.posting.level = logging.WARNING


async def run(
    settings: OperatorSettings,
    kubeconfig: str | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until stopped (SIGTERM/SIGINT, or `stop_flag`)."""
    kube = Kube(load_configuration(kubeconfig), settings.field_manager, settings.api_concurrency)
    try:
        served, server_version = await kube.served_versions()
        versions = ApiVersions.from_discovery(served, server_version)
        log.info("API versions chosen by discovery: %s", versions)
        reconciler = Reconciler(kube, settings, versions, Store())
        cert_dir = None
        if settings.webhook_service:
            cert_dir = settings.webhook_cert_dir or await webhook.shared_certificate(
                kube, settings.webhook_service, settings.webhook_namespace
            )
        registry = build_registry(reconciler, settings, cert_dir)
        batch.register(registry, batch.BatchReconciler(kube, settings, versions))
        if settings.metrics_port:
            prometheus_client.start_http_server(settings.metrics_port)
        await kopf.operator(
            registry=registry,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=settings.standalone,
            priority=settings.peering_priority,
            # Naming the peering object makes peering mandatory: standalone names none.
            peering_name=None if settings.standalone else settings.peering_name,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        await kube.close()


def main() -> None:
    settings = OperatorSettings()
    kopf.configure(
        log_format=kopf.LogFormat.JSON,
        verbose=settings.log_level == "debug",
        quiet=settings.log_level == "warning",
    )
    # kopf logs every event handler's success per object; only problems are worth a line.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(run(settings))
