"""The operator process: settings, discovery, the two reconcilers wired into one kopf registry, health,
metrics, peering.

kopf is used for what it is good at (watching, peering, admission, liveness). Each
reconciler (`online`, `batch`) registers its own handlers; this module only wires
them, with one store and one API client. Reconciles run from watch events
(`on.event`), never through kopf's create/update state machine: that keeps kopf from
writing progress annotations, diff-bases or finalizers, so an operator restart
writes nothing. Children are garbage-collected through owner references; no
finalizer is needed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import prometheus_client

from mlendpoints.operator import batch, online, webhook
from mlendpoints.operator.kube import Kube, load_configuration
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.operator.store import Store
from mlendpoints.render.discovery import ApiVersions

log = logging.getLogger("mlendpoints.operator")
PREFIX = "mlendpoints.io"


def build_registry(
    online_reconciler: online.Reconciler,
    batch_reconciler: batch.BatchReconciler,
    webhook_cert_dir: str | None = None,
) -> kopf.OperatorRegistry:
    """All handlers: login, kopf's settings, each reconciler's own, and the admission webhook when
    `webhook_cert_dir` (its certificate) is given."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        if webhook_cert_dir is not None:
            webhook.configure(settings, online_reconciler.settings, webhook_cert_dir)

    online.register(registry, online_reconciler)
    batch.register(registry, batch_reconciler)
    if webhook_cert_dir is not None:
        webhook.register(registry, online_reconciler.store)
        webhook.register_model_inputs(registry, online_reconciler.settings)
    return registry


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
        store = Store()
        cert_dir = None
        if settings.webhook_service:
            cert_dir = settings.webhook_cert_dir or await webhook.shared_certificate(
                kube, settings.webhook_service, settings.webhook_namespace
            )
        registry = build_registry(
            online.Reconciler(kube, settings, versions, store),
            batch.BatchReconciler(kube, settings, store),
            cert_dir,
        )
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
