"""Where local endpoints keep their state, so `local ls/logs/down` work from any shell.

Layout under `$MLENDPOINTS_LOCAL_HOME` (default `~/.cache/mlendpoints/local`):

    models/<sha256(resolved model URI)[:16]>/   the model cache, shared by all endpoints
    endpoints/<endpoint>/state.json              what runs: processes, ports, keys, spec hashes
    endpoints/<endpoint>/pods/<pod>/             each pod's volumes, logs and termination messages
    endpoints/<endpoint>/lock                    held while `up`, `down` or the scaler changes the endpoint
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlendpoints.local.runner import Process, alive


class LocalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLENDPOINTS_LOCAL_")

    home: Path = Path.home() / ".cache" / "mlendpoints" / "local"


class DeploymentState(BaseModel):
    spec_hash: str
    model_uri: str  # the resolved URI the pods fetch
    model_version: str | None = None
    instances: list[list[Process]] = Field(default_factory=list)  # per pod, its containers
    desired: int | None = None  # instances wanted: instanceCount, or the scaler's last decision
    # Scaled on load (scaleSettings.type concurrency): what the endpoint's scaler process needs to
    # start and stop instances without the YAML: the deployment's spec (its policy), the rendered pod
    # spec and its model volume. None for a fixed instance count.
    scaling: dict[str, Any] | None = None
    pod_spec: dict[str, Any] | None = None
    model_volume: str | None = None
    scale_reason: str | None = None  # why the scaler last changed the count (activate, scale-to-zero, ...)

    def processes(self) -> list[Process]:
        return [p for pod in self.instances for p in pod]


class EndpointState(BaseModel):
    endpoint: str
    port: int
    keys: dict[str, str]
    auth_mode: str = "key"
    traffic: dict[str, int] = Field(default_factory=dict)
    mirror_traffic: dict[str, int] = Field(default_factory=dict)
    supervisor_pid: int | None = None  # the foreground `up` that stops everything on Ctrl-C
    router_hash: str | None = None
    router: list[Process] = Field(default_factory=list)
    scaler: list[Process] = Field(default_factory=list)  # the scaler process, with deployments scaled on load
    objects: list[dict[str, Any]] = Field(default_factory=list)  # ConfigMaps/Secrets the pods reference
    deployments: dict[str, DeploymentState] = Field(default_factory=dict)

    @property
    def scoring_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def processes(self) -> list[Process]:
        return [*self.scaler, *self.router, *(p for d in self.deployments.values() for p in d.processes())]

    def running(self) -> bool:
        return any(alive(p.pid) for p in self.processes())


class Store:
    """The local state directory."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def model_dir(self, resolved_uri: str) -> Path:
        return self.home / "models" / hashlib.sha256(resolved_uri.encode()).hexdigest()[:16]

    def endpoint_dir(self, endpoint: str) -> Path:
        return self.home / "endpoints" / endpoint

    def pod_dir(self, endpoint: str, pod: str) -> Path:
        return self.endpoint_dir(endpoint) / "pods" / pod

    def load(self, endpoint: str) -> EndpointState | None:
        path = self.endpoint_dir(endpoint) / "state.json"
        if not path.exists():
            return None
        return EndpointState.model_validate_json(path.read_text())

    def save(self, state: EndpointState) -> None:
        path = self.endpoint_dir(state.endpoint) / "state.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=1))
        os.replace(tmp, path)

    def remove(self, endpoint: str) -> None:
        shutil.rmtree(self.endpoint_dir(endpoint), ignore_errors=True)

    def endpoints(self) -> list[EndpointState]:
        root = self.home / "endpoints"
        found = (self.load(d.name) for d in sorted(root.iterdir())) if root.is_dir() else iter(())
        return [s for s in found if s is not None]

    @contextlib.contextmanager
    def locked(self, endpoint: str) -> Iterator[None]:
        """One `up`/`down` at a time per endpoint, across processes."""
        path = self.endpoint_dir(endpoint) / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
