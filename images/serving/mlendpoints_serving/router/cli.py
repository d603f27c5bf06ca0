"""`mlendpoints-router`: file mode (`--config FILE`) or cluster mode (`--configmap NAME --namespace NS`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import uvloop
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlendpoints_serving.contract import (
    ENV_POD_NAME,
    ENV_PREFIX_ROUTER,
    ROUTER_PORT,
    TOKEN_ALLOWED_TTL_S,
    TOKEN_CACHE_SIZE,
    TOKEN_DENIED_TTL_S,
    CollectorHealth,
    RouterConfig,
    collector_status_configmap_name,
    keys_secret_name,
)
from mlendpoints_serving.router import watch
from mlendpoints_serving.router.auth import KeyChecker
from mlendpoints_serving.router.config import ConfigError, load_config_file, load_keys_file, watch_file
from mlendpoints_serving.router.metrics import RouterMetrics
from mlendpoints_serving.router.proxy import AdminHandler, serve
from mlendpoints_serving.router.service import Router
from mlendpoints_serving.router.state import RoutingState
from mlendpoints_serving.router.tls import CertReloader
from mlendpoints_serving.router.tokenauth import TokenChecker
from mlendpoints_serving.router.upstream import UpstreamPool
from mlendpoints_serving.runtime import fatal, setup_logging

COMPONENT = "mlendpoints-router"
DRAIN_SECONDS = 10.0
log = logging.getLogger("mlendpoints.router")


class StartupError(Exception):
    """The router cannot start: reported as a fatal error."""


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX_ROUTER, cli_prog_name=COMPONENT, cli_kebab_case=True, extra="ignore"
    )

    config: Path | None = Field(default=None, description="File mode: RouterConfig JSON, re-read on change.")
    configmap: str | None = Field(default=None, description="Cluster mode: ConfigMap holding router.json.")
    namespace: str | None = Field(default=None, description="Cluster mode: namespace (default: the pod's).")
    kubeconfig: str | None = Field(
        default=None, description="Cluster mode outside a pod (default: KUBECONFIG)."
    )
    host: str = "0.0.0.0"
    port: int = ROUTER_PORT
    request_read_timeout_s: float = Field(
        default=60.0, gt=0, description="A request must arrive whole this long after its first byte (408)."
    )
    collector_flush_timeout_s: float = Field(
        default=15.0,
        ge=0,
        description="On SIGTERM, after requests drain: the longest wait for collected records to be written "
        "(keep drain + this within the pod's termination grace period, 30 s by default).",
    )
    log_level: str = "info"
    tls_cert_file: Path | None = Field(
        default=None, description="Serve HTTPS with this PEM certificate chain (with --tls-key-file)."
    )
    tls_key_file: Path | None = Field(default=None, description="The PEM private key of --tls-cert-file.")
    tls_reload_interval_s: float = Field(
        default=5.0, gt=0, description="How often the TLS files are checked for a change (then reloaded)."
    )
    token_allowed_ttl_s: float = Field(
        default=TOKEN_ALLOWED_TTL_S, ge=0, description="authMode token: how long an allowed review is reused."
    )
    token_denied_ttl_s: float = Field(
        default=TOKEN_DENIED_TTL_S, ge=0, description="authMode token: how long a denied review is reused."
    )
    token_cache_size: int = Field(
        default=TOKEN_CACHE_SIZE, ge=1, description="authMode token: reviews kept (oldest dropped first)."
    )
    admin_port: int | None = Field(
        default=None, description="Also serve /health, /metrics and /-/scaling (only) in plain HTTP here."
    )

    @model_validator(mode="after")
    def _one_mode(self) -> RouterSettings:
        if (self.config is None) == (self.configmap is None):
            raise ValueError(
                "give exactly one of --config FILE (file mode) or --configmap NAME (cluster mode)"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both --tls-cert-file and --tls-key-file, or neither")
        return self


def router_pod() -> str:
    return os.environ.get(ENV_POD_NAME) or os.uname().nodename


def build_router(config: RouterConfig, tokens: TokenChecker | None = None) -> Router:
    return Router(RoutingState(config), KeyChecker(), UpstreamPool(), RouterMetrics(), tokens=tokens)


def apply_config(router: Router, config: RouterConfig) -> None:
    router.state.apply_config(config)
    _prune(router)
    log.info("config applied", extra={"fields": {"traffic": config.traffic, "mirror": config.mirrorTraffic}})


def _prune(router: Router) -> None:
    router.pool.prune({pod.address for d in router.state.deployments.values() for pod in d.pods})


# --- file mode -----------------------------------------------------------------
class FileMode:
    """Watches the config file, and the keys file it names (restarting that watch if the name changes)."""

    def __init__(self, path: Path, stop: asyncio.Event) -> None:
        self.path = path
        self.stop = stop
        self.router = build_router(load_config_file(path))
        self._keys_task: asyncio.Task[None] | None = None
        self._keys_path: Path | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._use_keys_file(self.router.state.config)
        self._tasks.append(
            asyncio.create_task(watch_file(self.path, load_config_file, self._on_config, self.stop))
        )

    def _on_config(self, config: RouterConfig) -> None:
        apply_config(self.router, config)
        self._use_keys_file(config)

    def _use_keys_file(self, config: RouterConfig) -> None:
        path = (self.path.parent / config.keysFile) if config.keysFile else None
        if path == self._keys_path:
            return
        if self._keys_task is not None:
            self._keys_task.cancel()
            self._keys_task = None
        self._keys_path = path
        if path is None:
            self.router.keys.set_keys()
            return
        try:
            self.router.keys.set_keys(*load_keys_file(path))
        except ConfigError as exc:
            log.error("no keys loaded yet: %s", exc)
        self._keys_task = asyncio.create_task(watch_file(path, load_keys_file, self._on_keys, self.stop))

    def _on_keys(self, keys: tuple[str | None, str | None]) -> None:
        self.router.keys.set_keys(*keys)
        log.info("keys reloaded")


# --- cluster mode ----------------------------------------------------------------
class ClusterMode:
    """Watches the ConfigMap, the keys Secret and the EndpointSlices of the deployments' Services."""

    def __init__(self, settings: RouterSettings, loop: asyncio.AbstractEventLoop) -> None:
        namespace = settings.namespace or watch.default_namespace()
        if not namespace:
            raise StartupError("cluster mode needs --namespace (no service-account namespace file found)")
        assert settings.configmap is not None
        self.namespace = namespace
        self.settings = settings
        self.configmap = settings.configmap
        try:
            self.api = watch.KubeApi(watch.load_api_client(settings.kubeconfig))
        except Exception as exc:  # kubeconfig missing or invalid, no in-cluster credentials
            raise StartupError(f"no Kubernetes credentials: {exc}") from exc
        self.loop = loop
        self.router: Router | None = None
        self._first_config: asyncio.Future[RouterConfig] = loop.create_future()
        self._watchers: list[watch.Watcher] = []

    async def start(self) -> Router:
        try:
            version = await asyncio.to_thread(self.api.endpointslice_version)
        except Exception as exc:
            raise StartupError(f"cannot discover the EndpointSlice API version: {exc}") from exc
        log.info(
            "watching", extra={"fields": {"namespace": self.namespace, "endpointslice_version": version}}
        )
        self._watch(watch.configmap_path(self.namespace), watch.by_name(self.configmap), self._on_configmaps)
        config = await self._first_config
        tokens = TokenChecker(
            self.api,
            self.namespace,
            self.settings.token_allowed_ttl_s,
            self.settings.token_denied_ttl_s,
            self.settings.token_cache_size,
        )
        router = self.router = build_router(config, tokens)
        router.collector.set_reporter(self._report_collector)
        secret = config.keysSecret or keys_secret_name(config.endpoint)
        self._watch(watch.secret_path(self.namespace), watch.by_name(secret), self._secret_handler(secret))
        self._watch(
            watch.endpointslice_path(self.namespace, version), watch.SLICES_OF_SERVICES, self._on_slices
        )
        return router

    def _report_collector(self, deployment: str, health: CollectorHealth) -> None:
        """Called from the collector's thread: the router pod's entry in the deployment's status ConfigMap."""
        name = collector_status_configmap_name(deployment)
        self.api.merge_configmap_data(self.namespace, name, {router_pod(): health.model_dump_json()})

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()

    def _watch(
        self, path: str, query: list[tuple[str, object]], handler: Callable[[list[watch.KubeObject]], None]
    ) -> None:
        watcher = watch.Watcher(self.api, path, query, self.loop, handler)
        watcher.start()
        self._watchers.append(watcher)

    def _on_configmaps(self, items: list[watch.KubeObject]) -> None:
        try:
            config = watch.config_from_configmaps(items, self.configmap)
        except ConfigError as exc:
            log.error("keeping the previous config: %s", exc)
            return
        if config is None:
            log.warning(
                "ConfigMap %s/%s not found; keeping the previous config", self.namespace, self.configmap
            )
        elif self.router is None:
            if not self._first_config.done():
                self._first_config.set_result(config)
        else:
            apply_config(self.router, config)

    def _secret_handler(self, name: str) -> Callable[[list[watch.KubeObject]], None]:
        def on_secrets(items: list[watch.KubeObject]) -> None:
            assert self.router is not None
            self.router.keys.set_keys(*watch.keys_from_secrets(items, name))

        return on_secrets

    def _on_slices(self, items: list[watch.KubeObject]) -> None:
        assert self.router is not None
        self.router.state.set_service_slices(watch.slices_by_service(items))
        _prune(self.router)


# --- process -------------------------------------------------------------------
async def run(settings: RouterSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    cluster: ClusterMode | None = None
    if settings.config is not None:
        file_mode = FileMode(settings.config, stop)
        file_mode.start()
        router = file_mode.router
    else:
        cluster = ClusterMode(settings, loop)
        router = await cluster.start()
    tls = _tls(settings, router)
    servers = [await _listen(router, settings, settings.port, tls)]
    if settings.admin_port is not None:
        servers.append(await _listen(router, settings, settings.admin_port, None, admin=True))
    reload_task = asyncio.create_task(tls.run(stop)) if tls is not None else None
    # What start-up made (imports, config, clients) lives as long as the process: out of the
    # collector's reach, the full collections that queued collected records bring on scan only them.
    gc.collect()
    gc.freeze()
    await stop.wait()
    for server in servers:
        server.close()
    if reload_task is not None:
        await reload_task
    await _drain(router)
    # Collected records still queued are written within the flush budget (the thread is a daemon:
    # a destination that hangs cannot keep the process past it).
    await router.collector.aflush(settings.collector_flush_timeout_s)
    if cluster is not None:
        cluster.stop()
    router.pool.close()


def _tls(settings: RouterSettings, router: Router) -> CertReloader | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    try:
        return CertReloader(
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_reload_interval_s,
            router.metrics.registry,
        )
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load the TLS certificate {settings.tls_cert_file}: {exc}") from exc


async def _listen(
    router: Router, settings: RouterSettings, port: int, tls: CertReloader | None, admin: bool = False
) -> asyncio.Server:
    try:
        server = await serve(
            AdminHandler(router) if admin else router,
            settings.host,
            port,
            lambda: router.state.config.maxBodyBytes,
            settings.request_read_timeout_s,
            tls.context if tls is not None else None,
        )
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.host}:{port}: {exc}") from exc
    fields = {"host": settings.host, "port": port, "tls": tls is not None, "admin": admin}
    log.info("listening", extra={"fields": fields})
    return server


async def _drain(router: Router) -> None:
    """Let requests under way, and held ones, finish (bounded) before exiting."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and any(
        d.in_flight or d.queue for d in router.state.deployments.values()
    ):
        await asyncio.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = RouterSettings(_cli_parse_args=list(sys.argv[1:] if argv is None else argv))  # type: ignore[call-arg]
    except ValueError as exc:
        fatal(COMPONENT, str(exc), code=2)
    setup_logging(settings.log_level)
    try:
        uvloop.run(run(settings))
    except (ConfigError, StartupError) as exc:
        fatal(COMPONENT, str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
