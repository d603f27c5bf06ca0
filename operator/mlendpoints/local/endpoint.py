"""`local up` / `local down`: apply an endpoint to processes the way the operator applies it to pods.

Per deployment, the operator's rendered pod template is hashed; an unchanged
hash keeps the running instances (scaled to `instanceCount`), a changed one
starts a new set, waits until it is ready, switches the router to it and only
then stops the old set, as a Deployment with maxUnavailable 0 rolls. Traffic
and mirror changes only rewrite the router's config file, which the router
re-reads without a restart.
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
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from mlendpoints.api.online import OnlineDeployment
from mlendpoints.errors import UserError
from mlendpoints.local import manifests, rendering
from mlendpoints.local.mapping import PodObjects, PodPlan, plan_pod
from mlendpoints.local.progress import directory_bytes
from mlendpoints.local.runner import Process, alive, start_pod, stop, wait_ready
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
        self, deployment: OnlineDeployment, rendered: rendering.RenderedDeployment, indexes: Iterable[int]
    ) -> list[list[Process]]:
        name = str(deployment.metadata["name"])
        model_volume = rendering.model_volume(rendered.pod_spec, deployment.spec.modelMountPath)
        cache = self.store.model_dir(rendered.model_uri)
        overrides = {model_volume: cache} if model_volume else {}
        started: list[list[Process]] = []
        try:
            for index in indexes:
                pod = f"{name}-{rendered.spec_hash}-{index}"
                plan = self._plan(pod, rendered.pod_spec, overrides, _allocate_port)
                label = f"{pod}: fetching {rendered.model_uri}"
                with self.console.status(label) as status:

                    def report(status: Any = status, label: str = label) -> None:
                        status.update(f"{label} ({directory_bytes(cache) / 1e6:.1f} MB)")

                    started.append(start_pod(plan, on_wait=report))
            with self.console.status(f"{name}: waiting for {len(started)} instance(s) to be ready"):
                wait_ready([p for pod in started for p in pod], timeout=self.timeout)
        except BaseException:
            stop(p for pod in started for p in pod)
            raise
        return started

    def apply_deployments(self) -> list[Process]:
        """Bring every deployment to its desired instances; return the processes to stop once routed away."""
        retired: list[Process] = []
        for name, deployment in self.spec.deployments.items():
            rendered = rendering.render_local_deployment(self.spec, deployment, NAMESPACE)
            current = self.state.deployments.get(name)
            want = deployment.spec.instanceCount
            if current is not None and current.spec_hash == rendered.spec_hash:
                healthy = [pod for pod in current.instances if all(alive(p.pid) for p in pod)]
                retired += [p for pod in current.instances if pod not in healthy for p in pod]
                retired += [p for pod in healthy[want:] for p in pod]
                kept = healthy[:want]
                used = {int(pod[0].pod.rsplit("-", 1)[1]) for pod in kept}
                unused = (i for i in itertools.count() if i not in used)
                added = self._start_instances(
                    deployment, rendered, itertools.islice(unused, want - len(kept))
                )
                current.instances = kept + added
                if added:
                    self.console.print(f"{name}: {len(added)} instance(s) added")
            else:
                if current is not None:
                    self.console.print(f"{name}: changed, rolling out {want} new instance(s)")
                    retired += current.processes()
                new = DeploymentState(
                    spec_hash=rendered.spec_hash,
                    model_uri=rendered.model_uri,
                    model_version=rendered.model_version,
                    instances=self._start_instances(deployment, rendered, range(want)),
                )
                self.state.deployments[name] = new
            self.store.save(self.state)
        for name in [n for n in self.state.deployments if n not in self.spec.deployments]:
            self.console.print(f"{name}: removed from the endpoint")
            retired += self.state.deployments.pop(name).processes()
        return retired

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
                            "backends": [
                                f"127.0.0.1:{proc.ports[next(iter(proc.ports))]}"
                                for pod in self.state.deployments[name].instances
                                for proc in pod
                                if proc.ports
                            ],
                        }
                    )
                    for name, route in rendered.config.deployments.items()
                },
            }
        )
        config_file = endpoint_dir / ROUTER_CONFIG_KEY
        router_running = bool(self.state.router) and all(alive(p.pid) for p in self.state.router)
        log_offset = _size(self.state.router[0].log) if router_running else 0
        tmp = config_file.with_suffix(".tmp")
        tmp.write_text(RouterConfig.model_validate(config.model_dump()).model_dump_json(indent=1))
        os.replace(tmp, config_file)  # atomic: the router never reads half a file
        self.state.traffic = dict(config.traffic)
        self.state.mirror_traffic = dict(config.mirrorTraffic)
        self.state.auth_mode = config.authMode
        pod_spec = rendering.file_mode(rendered.pod_spec, config_file)
        router_hash = _hash({"pod": pod_spec, "port": self.state.port})
        if self.state.router_hash == router_hash and router_running:
            _wait_applied(Path(self.state.router[0].log), log_offset)
            return
        stop(self.state.router)
        plan = self._plan(f"{self.state.endpoint}-router", pod_spec, {}, lambda: self.state.port)
        with self.console.status("router: starting"):
            self.state.router = start_pod(plan)
            self.state.router_hash = router_hash
            self.store.save(self.state)
            wait_ready(self.state.router, timeout=ROUTER_READY_TIMEOUT_S)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _wait_applied(router_log: Path, offset: int, timeout: float = 3.0) -> None:
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
    """`pod/container` -> log file, the router first, filtered by deployment and container."""
    procs: list[Process] = []
    if deployment in (None, "router"):
        procs += state.router
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
