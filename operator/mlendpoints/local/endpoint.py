"""`local up` / `local down`: apply an endpoint to processes the way the operator applies it to pods.

Per deployment, the operator's rendered pod template is hashed; an unchanged
hash keeps the running instances (scaled to `instanceCount`), a changed one
starts a new set, waits until it is ready, switches the router to it and only
then stops the old set, as a Deployment with maxUnavailable 0 rolls. Traffic
and mirror changes only rewrite the router's config file, which the router
re-reads without a restart.

A deployment scaled on load (scaleSettings.type concurrency) keeps the count the endpoint's scaler
process sets (`mlendpoints.local.autoscale`, started here while such a deployment exists); new, it
starts with max(minInstances, 1) instances.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from mlendpoints.api.online import OnlineDeployment
from mlendpoints.errors import UserError
from mlendpoints.local import manifests, rendering
from mlendpoints.local.mapping import ContainerPlan, PodObjects, PodPlan, plan_pod
from mlendpoints.local.progress import directory_bytes
from mlendpoints.local.runner import Process, alive, start, start_pod, stop, wait_ready
from mlendpoints.local.state import DeploymentState, EndpointState, Store
from mlendpoints_serving.contract import (
    ROUTER_CONFIG_KEY,
    SECRET_PRIMARY_KEY,
    SECRET_SECONDARY_KEY,
    RouterConfig,
    keys_secret_name,
)

DEFAULT_PORT = 8080
NAMESPACE = "local"
ROUTER_READY_TIMEOUT_S = 60.0
ROUTER_APPLIED_MESSAGE = b'"config applied"'  # the router's log line for each config it applies
SCALER_MODULE = "mlendpoints.local.autoscale"  # run as `python -m` by `up`: the endpoint's scaler


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _allocate_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hash(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:10]


def _keys_secret(endpoint: str, keys: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": keys_secret_name(endpoint)},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()},
    }


def backends(dep: DeploymentState) -> list[str]:
    """The router's `host:port` backends of a deployment: each instance's first port."""
    return [
        f"127.0.0.1:{proc.ports[next(iter(proc.ports))]}"
        for pod in dep.instances
        for proc in pod
        if proc.ports
    ]


def write_router_config(config_file: Path, config: RouterConfig) -> None:
    tmp = config_file.with_suffix(".tmp")
    tmp.write_text(RouterConfig.model_validate(config.model_dump()).model_dump_json(indent=1))
    os.replace(tmp, config_file)  # atomic: the router never reads half a file


def router_config_file(store: Store, endpoint: str) -> Path:
    return store.endpoint_dir(endpoint) / ROUTER_CONFIG_KEY


def pod_objects(state: EndpointState) -> PodObjects:
    """The ConfigMaps and Secrets the endpoint's pods may reference, with the keys Secret."""
    return PodObjects.from_manifests([*state.objects, _keys_secret(state.endpoint, state.keys)])


def _wanted(deployment: OnlineDeployment, scaled: int | None) -> int:
    """Instances to run: instanceCount; scaled on load, the scaler's count (`scaled`, None for a new
    deployment: max(minInstances, 1)) within minInstances..maxInstances."""
    scale = deployment.spec.scaleSettings
    if scale.type != "concurrency":
        return deployment.spec.instanceCount
    count = max(scale.minInstances, 1) if scaled is None else scaled
    return min(max(count, scale.minInstances), scale.maxInstances)


def _describe(
    dep: DeploymentState,
    deployment: OnlineDeployment,
    rendered: rendering.RenderedDeployment,
    model_volume: str | None,
    want: int,
) -> None:
    on_load = deployment.spec.scaleSettings.type == "concurrency"
    dep.desired = want
    dep.scaling = deployment.spec.model_dump(mode="json") if on_load else None
    dep.pod_spec = rendered.pod_spec if on_load else None
    dep.model_volume = model_volume


def start_instances(
    store: Store,
    endpoint: str,
    objects: PodObjects,
    name: str,
    dep: DeploymentState,
    pod_spec: dict[str, Any],
    indexes: Iterable[int],
    timeout: float,
    console: Console | None = None,
) -> list[list[Process]]:
    """Start instances `indexes` of a deployment (model fetch, then its containers) and wait until
    all are ready; on any failure stop what was started. `console`: progress shown there."""
    cache = store.model_dir(dep.model_uri)
    overrides = {dep.model_volume: cache} if dep.model_volume else {}
    started: list[list[Process]] = []

    def status(label: str) -> Any:
        return console.status(label) if console is not None else contextlib.nullcontext()

    try:
        for index in indexes:
            pod = f"{name}-{dep.spec_hash}-{index}"
            plan = plan_pod(
                pod,
                pod_spec,
                store.pod_dir(endpoint, pod),
                objects,
                namespace=NAMESPACE,
                volume_overrides=overrides,
                allocate_port=_allocate_port,
            )
            label = f"{pod}: fetching {dep.model_uri}"
            with status(label) as shown:

                def report(shown: Any = shown, label: str = label) -> None:
                    if shown is not None:
                        shown.update(f"{label} ({directory_bytes(cache) / 1e6:.1f} MB)")

                started.append(start_pod(plan, on_wait=report))
        with status(f"{name}: waiting for {len(started)} instance(s) to be ready"):
            wait_ready([p for pod in started for p in pod], timeout=timeout)
    except BaseException:
        stop(p for pod in started for p in pod)
        raise
    return started


class _Applier:
    """One `up`: what is desired, what runs, and the console to report progress on."""

    def __init__(
        self,
        store: Store,
        state: EndpointState,
        spec: manifests.LocalEndpoint,
        console: Console,
        timeout: float,
    ) -> None:
        self.timeout = timeout
        self.store = store
        self.state = state
        self.spec = spec
        self.console = console
        self.objects = PodObjects.from_manifests([*spec.objects, _keys_secret(state.endpoint, state.keys)])

    def _plan(
        self, pod: str, pod_spec: dict[str, Any], overrides: dict[str, Path], port: Callable[[], int]
    ) -> PodPlan:
        return plan_pod(
            pod,
            pod_spec,
            self.store.pod_dir(self.state.endpoint, pod),
            self.objects,
            namespace=NAMESPACE,
            volume_overrides=overrides,
            allocate_port=port,
        )

    def _start_instances(
        self, name: str, dep: DeploymentState, pod_spec: dict[str, Any], indexes: Iterable[int]
    ) -> list[list[Process]]:
        return start_instances(
            self.store,
            self.state.endpoint,
            self.objects,
            name,
            dep,
            pod_spec,
            indexes,
            self.timeout,
            self.console,
        )

    def apply_deployments(self) -> list[Process]:
        """Bring every deployment to its desired instances; return the processes to stop once routed away.

        A deployment scaled on load (scaleSettings.type concurrency) keeps the count its scaler set,
        within minInstances..maxInstances; it starts with max(minInstances, 1) instances, as a new
        Deployment on the cluster starts with 1 replica, and the scaler takes it to zero once idle.
        """
        retired: list[Process] = []
        self.state.objects = list(self.spec.objects)
        for name, deployment in self.spec.deployments.items():
            rendered = rendering.render_local_deployment(self.spec, deployment, NAMESPACE)
            current = self.state.deployments.get(name)
            model_volume = rendering.model_volume(rendered.pod_spec, deployment.spec.modelMountPath)
            scale = deployment.spec.scaleSettings
            on_load = scale.type == "concurrency"
            if current is not None and current.spec_hash == rendered.spec_hash:
                healthy = [pod for pod in current.instances if all(alive(p.pid) for p in pod)]
                want = _wanted(deployment, len(healthy) if current.scaling is not None else None)
                retired += [p for pod in current.instances if pod not in healthy for p in pod]
                retired += [p for pod in healthy[want:] for p in pod]
                kept = healthy[:want]
                _describe(current, deployment, rendered, model_volume, want)
                used = {int(pod[0].pod.rsplit("-", 1)[1]) for pod in kept}
                unused = (i for i in itertools.count() if i not in used)
                added = self._start_instances(
                    name, current, rendered.pod_spec, itertools.islice(unused, want - len(kept))
                )
                current.instances = kept + added
                if added:
                    self.console.print(f"{name}: {len(added)} instance(s) added")
            else:
                was = None
                if current is not None:
                    retired += current.processes()
                    if current.scaling is not None and on_load:  # the scaler's count carries over
                        was = sum(1 for pod in current.instances if all(alive(p.pid) for p in pod))
                want = _wanted(deployment, was)
                if current is not None:
                    self.console.print(f"{name}: changed, rolling out {want} new instance(s)")
                new = DeploymentState(
                    spec_hash=rendered.spec_hash,
                    model_uri=rendered.model_uri,
                    model_version=rendered.model_version,
                )
                _describe(new, deployment, rendered, model_volume, want)
                new.instances = self._start_instances(name, new, rendered.pod_spec, range(want))
                self.state.deployments[name] = new
            if on_load:
                now = len(self.state.deployments[name].instances)
                zero = (
                    f", to zero after {scale.scaleToZeroAfterSeconds}s idle"
                    if scale.minInstances == 0
                    else ""
                )
                self.console.print(
                    f"{name}: scaled on load, {now} instance(s) now "
                    f"({scale.minInstances}..{scale.maxInstances}{zero})"
                )
            self.store.save(self.state)
        for name in [n for n in self.state.deployments if n not in self.spec.deployments]:
            self.console.print(f"{name}: removed from the endpoint")
            retired += self.state.deployments.pop(name).processes()
        return retired

    def apply_scaler(self) -> None:
        """Run the endpoint's scaler process while a deployment scales on load; stop it otherwise."""
        on_load = any(dep.scaling is not None for dep in self.state.deployments.values())
        running = bool(self.state.scaler) and all(alive(p.pid) for p in self.state.scaler)
        if on_load and not running:
            stop(self.state.scaler)
            pod = f"{self.state.endpoint}-scaler"
            pod_dir = self.store.pod_dir(self.state.endpoint, pod)
            plan = ContainerPlan(
                pod=pod,
                name="scaler",
                argv=[sys.executable, "-m", SCALER_MODULE, self.state.endpoint],
                env={"MLENDPOINTS_LOCAL_HOME": str(self.store.home)},
                cwd=None,
                ports={},
                readiness_url=None,
                log=pod_dir / "scaler.log",
                termination_log=pod_dir / "termination-log",
            )
            self.state.scaler = [start(plan)]
        elif not on_load and self.state.scaler:
            stop(self.state.scaler)
            self.state.scaler = []
        self.store.save(self.state)

    def apply_router(self) -> None:
        """Write the router's config file (re-read live), and (re)start the router only if its pod changed."""
        rendered = rendering.render_router(self.spec, NAMESPACE)
        endpoint_dir = self.store.endpoint_dir(self.state.endpoint)
        keys_file = endpoint_dir / "keys.json"
        keys_file.write_text(json.dumps(self.state.keys))
        config = rendered.config.model_copy(
            update={
                "namespace": None,
                "keysSecret": None,
                "keysFile": str(keys_file),
                "deployments": {
                    name: route.model_copy(
                        update={
                            "service": None,
                            "backends": backends(self.state.deployments[name]),
                        }
                    )
                    for name, route in rendered.config.deployments.items()
                },
            }
        )
        config_file = router_config_file(self.store, self.state.endpoint)
        router_running = bool(self.state.router) and all(alive(p.pid) for p in self.state.router)
        log_offset = log_size(self.state.router[0].log) if router_running else 0
        write_router_config(config_file, config)
        self.state.traffic = dict(config.traffic)
        self.state.mirror_traffic = dict(config.mirrorTraffic)
        self.state.auth_mode = config.authMode
        pod_spec = rendering.file_mode(rendered.pod_spec, config_file)
        router_hash = _hash({"pod": pod_spec, "port": self.state.port})
        if self.state.router_hash == router_hash and router_running:
            wait_applied(Path(self.state.router[0].log), log_offset)
            return
        stop(self.state.router)
        plan = self._plan(f"{self.state.endpoint}-router", pod_spec, {}, lambda: self.state.port)
        with self.console.status("router: starting"):
            self.state.router = start_pod(plan)
            self.state.router_hash = router_hash
            self.store.save(self.state)
            wait_ready(self.state.router, timeout=ROUTER_READY_TIMEOUT_S)


def log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def wait_applied(router_log: Path, offset: int, timeout: float = 3.0) -> None:
    """Return once the running router has re-read its config file (it logs each config it applies).

    The router polls the file a few times a second; waiting here makes `up` return only when
    the new split is in force.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(router_log, "rb") as fh:
            fh.seek(offset)
            if ROUTER_APPLIED_MESSAGE in fh.read():
                return
        time.sleep(0.05)
    raise UserError(
        f"the router did not apply its new config within {timeout:.0f}s", f"see its log: {router_log}"
    )


def _new_keys() -> dict[str, str]:
    return {SECRET_PRIMARY_KEY: secrets.token_urlsafe(32), SECRET_SECONDARY_KEY: secrets.token_urlsafe(32)}


def up(files: list[Path], store: Store, port: int | None, timeout: float, console: Console) -> EndpointState:
    spec = manifests.select_endpoint(manifests.load(files))
    with store.locked(spec.name):
        state = store.load(spec.name)
        if state is None or not state.running():
            # Keys and port survive a stopped run (e.g. after a reboot), as the keys Secret would.
            keys, last_port = (state.keys, state.port) if state is not None else (_new_keys(), DEFAULT_PORT)
            state = EndpointState(endpoint=spec.name, port=port or last_port, keys=keys)
        elif port is not None and port != state.port:
            state.port = port
        router_running = state.router_hash is not None and all(alive(p.pid) for p in state.router)
        if not router_running and not _free(state.port):
            raise UserError(f"port {state.port} is in use", "pass another --port, or stop what listens there")
        applier = _Applier(store, state, spec, console, timeout)
        store.save(state)
        retired = applier.apply_deployments()
        applier.apply_router()
        applier.apply_scaler()
        stop(retired)
        store.save(state)
        return state


def claim_supervisor(store: Store, name: str) -> None:
    with store.locked(name):
        state = store.load(name)
        if state is not None:
            state.supervisor_pid = os.getpid()
            store.save(state)


def down(store: Store, name: str) -> None:
    with store.locked(name):
        state = store.load(name)
        if state is not None:
            stop(state.processes())
    store.remove(name)


def log_files(
    store: Store, state: EndpointState, deployment: str | None, container: str | None
) -> dict[str, Path]:
    """`pod/container` -> log file, the router (and scaler) first, filtered by deployment and container."""
    procs: list[Process] = []
    if deployment in (None, "router"):
        procs += state.router
    if deployment in (None, "scaler"):
        procs += state.scaler
    for name, dep in state.deployments.items():
        if deployment in (None, name):
            procs += dep.processes()
    files: dict[str, Path] = {}
    for proc in procs:
        if container in (None, proc.container):
            files[f"{proc.pod}/{proc.container}"] = Path(proc.log)
        pod_dir = Path(proc.log).parent
        for log in sorted(pod_dir.glob("*.log")):  # init containers (fetch) have logs but no process
            label = f"{proc.pod}/{log.stem}"
            if container in (None, log.stem) and label not in files:
                files[label] = log
    return files


def request_hint(state: EndpointState, store: Store) -> str:
    """A ready `-d` argument for the curl line: the first row of the model's input example, if it has one."""
    for dep in state.deployments.values():
        example = store.model_dir(dep.model_uri) / "input_example.json"
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(example.read_text())
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = {**{k: v for k, v in data.items() if k != "index"}, "data": data["data"][:1]}
            return f"-d '{json.dumps({'input_data': data}, separators=(',', ':'))}'"
    return "-d @request.json"
