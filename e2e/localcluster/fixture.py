"""Pytest plugin: the real Kubernetes cluster and the project's images for cluster tests.

Which cluster (docs/development.md):
- ``USE_EXISTING_CLUSTER=1``: the cluster of ``KUBECONFIG`` (kind or any other); the
  images are built with the ambient docker and must be loadable by that cluster
  (``MLENDPOINTS_LOAD_IMAGE="kind load docker-image"``).
- otherwise the local single-node cluster of e2e/localcluster/cluster.sh, started
  by the test session itself and left running for the next one (``make cluster-down``).
- ``MLENDPOINTS_SKIP_CLUSTER=1`` skips every cluster test, saying so. Without it a
  cluster that cannot start fails those tests loudly.

Starting the cluster and building the images can take minutes when cold, so it
happens once, before the first test runs (outside the per-test timeout), and only
when a selected test needs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "e2e" / "localcluster" / "cluster.sh"
BUILD_SH = ROOT / "images" / "build.sh"
BASE_IMAGE_SH = ROOT / "e2e" / "localcluster" / "base-image.sh"
# Pods of the local cluster reach the host's services at the docker bridge gateway.
DOCKER_BRIDGE_GATEWAY = "172.17.0.1"
SKIP_REASON = "MLENDPOINTS_SKIP_CLUSTER=1: the Kubernetes cluster layer is opted out"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") == "1"


@dataclass(frozen=True)
class KubeCluster:
    kubeconfig: Path
    api_client: client.ApiClient
    version: tuple[int, int]  # server (major, minor), e.g. (1, 20)
    git_version: str
    # Where pods reach services listening on this machine (no cluster DNS on the local cluster).
    host_address: str
    local: bool  # the local cluster of cluster.sh, not USE_EXISTING_CLUSTER
    docker_host: str | None  # the docker daemon whose images the cluster runs

    @cached_property
    def _api_groups(self) -> dict[str, list[str]]:
        groups = client.ApisApi(self.api_client).get_api_versions().groups
        return {g.name: [v.version for v in g.versions] for g in groups}

    def served_versions(self, group: str) -> list[str]:
        """Versions of an API group the server serves, by discovery (the core group is ``""``)."""
        return ["v1"] if group == "" else self._api_groups.get(group, [])

    def newest_version(self, group: str, candidates: tuple[str, ...]) -> str:
        """The first of `candidates` (newest first) the server serves, e.g. EndpointSlice v1 or v1beta1."""
        served = self.served_versions(group)
        for version in candidates:
            if version in served:
                return version
        raise LookupError(f"{group} serves {served}, none of {candidates}")


@dataclass(frozen=True)
class Images:
    serving: str
    operator: str


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll `predicate` until it returns a truthy value (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout}s (last: {last!r})")


def open_through_service(request: str | urllib.request.Request, timeout: float = 30, wait: float = 90) -> Any:
    """urlopen through a Service address, waiting up to `wait` s for kube-proxy to program it.

    A Service whose pods just turned Ready may still have kube-proxy's
    no-endpoints rule, which refuses connections, for a sync period or two
    (longer right after the cluster starts). `timeout` bounds each attempt.
    Any other error is raised at once.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _run_script(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *argv], capture_output=True, text=True, check=False)


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


class _Substrate:
    """Brings up the cluster and the images once per session; remembers a failure to report it."""

    def __init__(self) -> None:
        self.cluster: KubeCluster | None = None
        self.cluster_error: str | None = None
        self.images: Images | None = None
        self.images_error: str | None = None
        self.base_image: str | None = None
        self.base_error: str | None = None

    def start_cluster(self) -> None:
        if self.cluster or self.cluster_error:
            return
        if _flag("USE_EXISTING_CLUSTER"):
            kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
            docker_host = os.environ.get("DOCKER_HOST")
            local = False
        else:
            started = time.monotonic()
            proc = _run_script([str(CLUSTER_SH), "up"])
            if proc.returncode != 0:
                # A failed `up` tears itself down, so one more try starts clean. A
                # component dying at start-up for a reason outside this project (seen
                # once in CI: CoreDNS killed silently while the machine was being
                # handed over) must not turn the whole e2e suite red; a second
                # failure does.
                first_failure = _tail(proc.stderr)
                proc = _run_script([str(CLUSTER_SH), "up"])
                if proc.returncode != 0:
                    self.cluster_error = (
                        f"e2e/localcluster/cluster.sh up failed twice:\n{first_failure}\n"
                        f"---- second try ----\n{_tail(proc.stderr)}"
                    )
                    return
                warnings.warn(f"cluster.sh up failed once, then came up:\n{first_failure}", stacklevel=1)
            print(f"\nlocal cluster ready in {time.monotonic() - started:.0f}s")
            env = dict(re.findall(r"export (\w+)=(\S+)", _run_script([str(CLUSTER_SH), "env"]).stdout))
            kubeconfig, docker_host, local = Path(env["KUBECONFIG"]), env["DOCKER_HOST"], True
            # Tests run `kubectl`: the one built with the cluster, of the same version.
            os.environ["PATH"] = f"{env['MLENDPOINTS_K8S_BIN']}{os.pathsep}{os.environ['PATH']}"
        try:
            api_client = config.new_client_from_config(config_file=str(kubeconfig))
            info = client.VersionApi(api_client).get_code()
        except Exception as exc:
            self.cluster_error = f"cannot reach the cluster of {kubeconfig}: {exc}"
            return
        self.cluster = KubeCluster(
            kubeconfig=kubeconfig,
            api_client=api_client,
            version=(int(info.major), int(re.sub(r"\D.*", "", info.minor))),
            git_version=info.git_version,
            host_address=os.environ.get("MLENDPOINTS_HOST_ADDRESS", DOCKER_BRIDGE_GATEWAY),
            local=local,
            docker_host=docker_host,
        )

    def ensure_base_image(self) -> None:
        self.start_cluster()
        if self.base_image or self.base_error or not self.cluster:
            return
        if chosen := os.environ.get("BASE_IMAGE"):
            self.base_image = chosen
        elif not self.cluster.local:
            self.base_image = "python:3.11-slim-bookworm"
        elif (proc := _run_script([str(BASE_IMAGE_SH)])).returncode != 0:
            self.base_error = f"e2e/localcluster/base-image.sh failed:\n{_tail(proc.stderr)}"
        else:
            self.base_image = "mlendpoints/base:bookworm"

    def build_images(self) -> None:
        self.start_cluster()
        if self.images or self.images_error or not self.cluster:
            return
        started = time.monotonic()
        proc = _run_script([str(BUILD_SH)])
        if proc.returncode != 0:
            self.images_error = f"images/build.sh failed:\n{_tail(proc.stderr)}"
            return
        print(f"images ready in {time.monotonic() - started:.0f}s")
        tags = {line.split("/", 1)[1].split(":", 1)[0]: line for line in proc.stdout.split()}
        self.images = Images(serving=tags["serving"], operator=tags["operator"])


_substrate = _Substrate()


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    if session.config.option.collectonly or _flag("MLENDPOINTS_SKIP_CLUSTER"):
        return
    needed = set().union(*(getattr(item, "fixturenames", ()) for item in session.items))
    if "images" in needed:
        _substrate.build_images()
    if "base_image" in needed:
        _substrate.ensure_base_image()
    if "kube_cluster" in needed:
        _substrate.start_cluster()


@pytest.fixture(scope="session")
def kube_cluster() -> KubeCluster:
    if _flag("MLENDPOINTS_SKIP_CLUSTER"):
        pytest.skip(SKIP_REASON)
    _substrate.start_cluster()
    if _substrate.cluster is None:
        pytest.fail(_substrate.cluster_error or "no cluster", pytrace=False)
    return _substrate.cluster


@pytest.fixture(scope="session")
def images(kube_cluster: KubeCluster) -> Images:
    """Tags of the project's images (images/build.sh, cached by content hash), runnable by the cluster."""
    _substrate.build_images()
    if _substrate.images is None:
        pytest.fail(_substrate.images_error or "no images", pytrace=False)
    return _substrate.images


@pytest.fixture(scope="session")
def base_image(kube_cluster: KubeCluster) -> str:
    """A Python base image the cluster's docker has: what tests' own small images build FROM."""
    _substrate.ensure_base_image()
    if _substrate.base_image is None:
        pytest.fail(_substrate.base_error or "no base image", pytrace=False)
    return _substrate.base_image


def docker_build(cluster: KubeCluster, tag: str, context: Path, base: str) -> str:
    """Build `context` (a Dockerfile taking ARG BASE_IMAGE) with the cluster's docker; the cluster gets it."""
    env = {**os.environ, **({"DOCKER_HOST": cluster.docker_host} if cluster.docker_host else {})}
    proc = subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(context)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker build {tag} failed:\n{_tail(proc.stderr)}")
    if cluster.local:
        # Pods run on the local cluster's containerd, not on the docker that built the image.
        loaded = _run_script([str(CLUSTER_SH), "load", tag])
        if loaded.returncode != 0:
            raise RuntimeError(f"cluster.sh load {tag} failed:\n{_tail(loaded.stderr)}")
    elif loader := os.environ.get("MLENDPOINTS_LOAD_IMAGE"):
        subprocess.run([*loader.split(), tag], env=env, check=True)
    return tag


@pytest.fixture
def namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (with its default ServiceAccount ready), deleted after.

    It enforces the `restricted` Pod Security profile: every pod the operator renders there must be
    admitted under it. A test whose own pods cannot be (a hostPath volume, a probe of the cluster
    itself) says so with `@pytest.mark.pod_security("baseline", reason=...)`.
    """
    core = client.CoreV1Api(kube_cluster.api_client)
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    marker = request.node.get_closest_marker("pod_security")
    level = marker.args[0] if marker else "restricted"
    labels = {"pod-security.kubernetes.io/enforce": level, "pod-security.kubernetes.io/warn": "restricted"}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    # Pods are refused until the controller-manager has made the default ServiceAccount
    # and, before 1.24 (token Secrets), its token: "No API token found for service account".
    needs_token_secret = kube_cluster.version < (1, 24)

    def default_account_ready() -> bool:
        accounts = core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        return bool(accounts) and (not needs_token_secret or bool(accounts[0].secrets))

    wait_for(f"default ServiceAccount in {name}", default_account_ready, timeout=30, interval=0.2)
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def host_share() -> Iterator[Callable[[Path], Path]]:
    """Copy a directory where a pod (uid 1000) can read it through a hostPath volume.

    Only meaningful on a single-node cluster running on this machine (the local one).
    The copy is world-readable, outside root's private home.
    """
    root = Path(tempfile.mkdtemp(prefix="mlendpoints-share-"))
    root.chmod(0o755)

    def share(src: Path) -> Path:
        dest = root / f"{src.name}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(src, dest)
        for path in [dest, *dest.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return dest

    yield share
    shutil.rmtree(root, ignore_errors=True)
