"""How a rendered Kubernetes pod spec maps onto this machine: the one place.

`mlendpoints local` runs the pod specs the operator renders as plain processes
on loopback. Everything that differs from a kubelet is decided here:

- **Image**: ignored. A container's `command` runs from the current Python
  environment (its `bin` directory first on PATH), so `mlendpoints-serve` is the
  installed one.
- **Volumes**: `emptyDir` -> a directory under the pod's work directory, unless
  the caller maps that volume elsewhere (the model volume -> the model cache,
  keyed by the resolved model URI); `configMap` / `secret` -> a directory with
  one file per key (`items[].path` honoured, Secret data base64-decoded). Other
  volume types are refused with the volume's name.
- **Mounts**: every string in `command`, `args`, env values and `workingDir`
  that starts with a `mountPath` (on a path boundary) is rewritten to the host
  directory (plus `subPath`). Containers cannot see each other's filesystem
  otherwise, exactly as in a pod.
- **Ports**: each `containerPort` gets a free loopback port. An argument equal
  to the container port that follows a flag ending in `port` (`--port 5001`,
  `--port=5001`), and an env var whose name ends in `PORT` holding that value,
  are rewritten to it. Listen addresses `0.0.0.0` / `::` become `127.0.0.1`,
  and `MLENDPOINTS_SERVE_HOST` / `MLENDPOINTS_ROUTER_HOST` default to it, so
  nothing listens beyond loopback. httpGet and tcpSocket probes use the mapped
  port.
- **Env**: the CLI's own environment (so `MLFLOW_TRACKING_URI` and cloud
  credentials work as they do in this shell), overlaid with `value`;
  `valueFrom` `configMapKeyRef` / `secretKeyRef` (from the objects passed
  in), `fieldRef` `metadata.name|namespace`, `status.podIP|hostIP`
  (127.0.0.1); `envFrom` of ConfigMaps and Secrets. `$(VAR)` in command and
  args expands as the kubelet does.
- **Termination message**: `MLENDPOINTS_TERMINATION_LOG` points at a file in the
  pod directory (the kubelet's `terminationMessagePath`), so a fatal reason is
  shown as the pod status would show it.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlendpoints.errors import UserError
from mlendpoints_serving.contract import ENV_ROUTER_HOST, ENV_SERVE_HOST, ENV_TERMINATION_LOG

LOOPBACK = "127.0.0.1"
# The data-plane servers listen on all addresses by default (right in a pod); locally only on loopback.
LOOPBACK_ENV = {ENV_SERVE_HOST: LOOPBACK, ENV_ROUTER_HOST: LOOPBACK}
_ANY_ADDRESS = {"0.0.0.0", "::", "[::]"}
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


@dataclass(frozen=True)
class PodObjects:
    """The ConfigMaps and Secrets a pod may reference, by name; Secret values already decoded."""

    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_manifests(cls, manifests: list[dict[str, Any]]) -> PodObjects:
        config_maps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, str]] = {}
        for obj in manifests:
            name = obj.get("metadata", {}).get("name", "")
            if obj.get("kind") == "ConfigMap":
                config_maps[name] = dict(obj.get("data") or {})
            elif obj.get("kind") == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
                data.update(obj.get("stringData") or {})
                secrets[name] = data
        return cls(config_maps, secrets)


@dataclass
class ContainerPlan:
    """One container of a pod, translated into a local process."""

    pod: str
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    ports: dict[int, int]  # containerPort -> loopback port
    readiness_url: str | None
    log: Path
    termination_log: Path


@dataclass
class PodPlan:
    name: str
    init_containers: list[ContainerPlan]
    containers: list[ContainerPlan]
    volumes: dict[str, Path]  # volume name -> host directory


def _volume_dir(
    pod: str, volume: dict[str, Any], workdir: Path, objects: PodObjects, overrides: Mapping[str, Path]
) -> Path:
    name = volume["name"]
    if name in overrides:
        overrides[name].mkdir(parents=True, exist_ok=True)
        return overrides[name]
    target = workdir / "volumes" / name
    target.mkdir(parents=True, exist_ok=True)
    if "emptyDir" in volume:
        return target
    for kind, key, source in (
        ("configMap", "name", objects.config_maps),
        ("secret", "secretName", objects.secrets),
    ):
        if kind in volume:
            ref = volume[kind][key]
            if ref not in source:
                raise UserError(
                    f"pod {pod}: volume {name!r} needs {kind} {ref!r}, which was not rendered",
                    "this is a bug in the renderer or the local runner; rerun with --debug",
                )
            data = source[ref]
            items = volume[kind].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                path = target / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(data[item["key"]])
            return target
    kinds = sorted(set(volume) - {"name"})
    raise UserError(
        f"pod {pod}: volume {name!r} of type {', '.join(kinds)} cannot run locally",
        "local endpoints support emptyDir, configMap and secret volumes",
    )


def _mount_rewriter(mounts: list[dict[str, Any]], volumes: Mapping[str, Path]) -> Callable[[str], str]:
    table = sorted(
        (
            (m["mountPath"].rstrip("/") or "/", volumes[m["name"]] / m.get("subPath", ""))
            for m in mounts
            if m["name"] in volumes
        ),
        key=lambda pair: -len(pair[0]),
    )

    def rewrite(value: str) -> str:
        for mount_path, host in table:
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(host) + value[len(mount_path) :]
            if "=" in value:  # --flag=/mount/path
                flag, _, rest = value.partition("=")
                if rest == mount_path or rest.startswith(mount_path + "/"):
                    return f"{flag}={host}{rest[len(mount_path) :]}"
        return value

    return rewrite


def _env(pod: str, namespace: str, container: dict[str, Any], objects: PodObjects) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            env.update(
                {
                    prefix + k: v
                    for k, v in objects.config_maps.get(source["configMapRef"]["name"], {}).items()
                }
            )
        if "secretRef" in source:
            env.update(
                {prefix + k: v for k, v in objects.secrets.get(source["secretRef"]["name"], {}).items()}
            )
    fields = {
        "metadata.name": pod,
        "metadata.namespace": namespace,
        "status.podIP": LOOPBACK,
        "status.hostIP": LOOPBACK,
        "spec.nodeName": "localhost",
    }
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = _expand(str(var["value"]), env)
            continue
        ref = var.get("valueFrom") or {}
        if "configMapKeyRef" in ref or "secretKeyRef" in ref:
            kind = "configMapKeyRef" if "configMapKeyRef" in ref else "secretKeyRef"
            table = objects.config_maps if kind == "configMapKeyRef" else objects.secrets
            key_ref = ref[kind]
            value = table.get(key_ref["name"], {}).get(key_ref["key"])
            if value is None and not key_ref.get("optional"):
                raise UserError(
                    f"pod {pod}: env {name} needs {key_ref['name']}/{key_ref['key']}, which does not exist",
                    "create it, or mark the reference optional",
                )
            if value is not None:
                env[name] = value
        elif "fieldRef" in ref:
            env[name] = fields.get(ref["fieldRef"]["fieldPath"], "")
        # resourceFieldRef: no resource limits locally; leaving the variable unset lets the program default.
    return env


def _expand(value: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: unknown references stay as written, `$$` escapes."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(sub, value)


def _rewrite_ports(argv: list[str], env: dict[str, str], ports: Mapping[int, int]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        previous = argv[i - 1] if i else ""
        if previous.lower().endswith("port") and previous.startswith("-") and arg.isdigit():
            arg = str(ports.get(int(arg), int(arg)))
        elif arg.startswith("-") and "=" in arg:
            flag, _, value = arg.partition("=")
            if flag.lower().endswith("port") and value.isdigit():
                arg = f"{flag}={ports.get(int(value), int(value))}"
            elif value in _ANY_ADDRESS:
                arg = f"{flag}={LOOPBACK}"
        elif arg in _ANY_ADDRESS:
            arg = LOOPBACK
        out.append(arg)
    for name, value in env.items():
        if name.upper().endswith("PORT") and value.isdigit():
            env[name] = str(ports.get(int(value), int(value)))
        elif value in _ANY_ADDRESS:
            env[name] = LOOPBACK
    return out


def _resolve_executable(command: str, path: str) -> str:
    if os.sep in command:
        return command
    for directory in path.split(os.pathsep):
        candidate = Path(directory) / command
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise UserError(
        f"{command!r} is not installed in this environment",
        "install the package that provides it (pip install 'mlendpoints[serving]')",
    )


def _probe_url(container: dict[str, Any], ports: Mapping[int, int]) -> str | None:
    """The readiness probe as `http://...` (httpGet) or `tcp://host:port` (tcpSocket); None without one."""
    probe = container.get("readinessProbe") or container.get("startupProbe") or {}
    action = probe.get("httpGet") or probe.get("tcpSocket")
    if not action:
        return None
    port = action["port"]
    if isinstance(port, str) and not port.isdigit():
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        port = named[port]
    address = f"{LOOPBACK}:{ports.get(int(port), int(port))}"
    if "httpGet" in probe:
        return f"http://{address}{action.get('path', '/')}"
    return f"tcp://{address}"


def plan_pod(
    name: str,
    pod_spec: dict[str, Any],
    workdir: Path,
    objects: PodObjects,
    *,
    namespace: str = "default",
    volume_overrides: Mapping[str, Path] | None = None,
    allocate_port: Callable[[], int],
) -> PodPlan:
    """Translate a pod spec into local processes: see the module docstring for every rule."""
    workdir.mkdir(parents=True, exist_ok=True)
    volumes = {
        v["name"]: _volume_dir(name, v, workdir, objects, volume_overrides or {})
        for v in pod_spec.get("volumes") or []
    }
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])

    def container_plan(container: dict[str, Any]) -> ContainerPlan:
        cname = container["name"]
        ports = {p["containerPort"]: allocate_port() for p in container.get("ports") or []}
        env = {**LOOPBACK_ENV, **_env(name, namespace, container, objects)}
        rewrite = _mount_rewriter(container.get("volumeMounts") or [], volumes)
        env = {k: rewrite(v) for k, v in env.items()}
        raw = [*(container.get("command") or []), *(container.get("args") or [])]
        if not raw:
            raise UserError(
                f"pod {name}: container {cname!r} has no command",
                "local endpoints run a container's command; the image's entrypoint is unknown here",
            )
        argv = _rewrite_ports([rewrite(_expand(a, env)) for a in raw], env, ports)
        termination_log = workdir / f"{cname}.termination-log"
        env[ENV_TERMINATION_LOG] = str(termination_log)
        env["PATH"] = path
        working_dir = container.get("workingDir")
        return ContainerPlan(
            pod=name,
            name=cname,
            argv=[_resolve_executable(argv[0], path), *argv[1:]],
            env=env,
            cwd=rewrite(working_dir) if working_dir else None,
            ports=ports,
            readiness_url=_probe_url(container, ports),
            log=workdir / f"{cname}.log",
            termination_log=termination_log,
        )

    return PodPlan(
        name=name,
        init_containers=[container_plan(c) for c in pod_spec.get("initContainers") or []],
        containers=[container_plan(c) for c in pod_spec.get("containers") or []],
        volumes=volumes,
    )
