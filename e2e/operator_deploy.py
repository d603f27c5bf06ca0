"""Runs the operator in the cluster from its image, installed with the Helm chart (charts/mlendpoints).

Shared by the end-to-end suites that need the operator (online and batch) and by bench/operator.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.localcluster.fixture import wait_for

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "mlendpoints"
CRDS = CHART / "crds"
RELEASE = "mlendpoints"
OPERATOR_NAMESPACE = "mlendpoints-system"
OPERATOR = "mlendpoints-operator"
# The chart's operator pod labels.
OPERATOR_PODS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: str

    def run(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(
            ["kubectl", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECONFIG": self.kubeconfig},
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout + proc.stderr if not check else proc.stdout

    def try_run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "KUBECONFIG": self.kubeconfig},
        )

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        proc = self.try_run("-n", namespace, "get", kind, name, "-o", "json")
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def apply(self, manifest: str | Sequence[Mapping[str, Any]], namespace: str | None = None) -> None:
        text = (
            manifest
            if isinstance(manifest, str)
            else json.dumps({"apiVersion": "v1", "kind": "List", "items": manifest})
        )
        self.run(*(["-n", namespace] if namespace else []), "apply", "-f", "-", stdin=text)


def helm(kubectl: Kubectl, *args: str, timeout: float = 600) -> str:
    """The project's Helm (scripts/helm.sh builds it from its Go module on first use) on this cluster."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "helm.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": kubectl.kubeconfig},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def operator_values(image: str, env: Mapping[str, str], **values: Any) -> dict[str, Any]:
    """Chart values running the operator from `image` (a local tag) with `env` added to its own."""
    repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        # A rebuilt image keeps its tag: a new annotation rolls the pod onto the image just built.
        "podAnnotations": {"mlendpoints.io/deployed-at": str(time.time_ns())},
        "extraEnv": [{"name": k, "value": v} for k, v in env.items()],
        **values,
    }


def remove_pre_chart_install(kubectl: Kubectl) -> None:
    """A cluster where the operator was applied from the old plain manifests (deploy/) holds objects of
    the chart's names that Helm refuses to adopt, and a Deployment whose selector cannot change."""
    deployment = kubectl.get("deployment", OPERATOR, OPERATOR_NAMESPACE)
    if deployment is None or "meta.helm.sh/release-name" in deployment["metadata"].get("annotations", {}):
        return
    kubectl.run(
        "-n", OPERATOR_NAMESPACE, "delete", "--ignore-not-found", "--cascade=foreground", "--wait",
        f"deployment/{OPERATOR}", f"service/{OPERATOR}", f"serviceaccount/{OPERATOR}",
    )  # fmt: skip
    kubectl.run(
        "delete", "--ignore-not-found", f"clusterrole/{OPERATOR}", f"clusterrolebinding/{OPERATOR}",
        f"clusterkopfpeering/{RELEASE}",
    )  # fmt: skip


def deploy_operator(
    kubectl: Kubectl,
    image: str,
    env: Mapping[str, str],
    timeout: float = 180,
    values: Mapping[str, Any] | None = None,
    chart: Path = CHART,
) -> None:
    """Install (or upgrade) the chart with the operator from `image`, and wait until it is ready.

    The CRDs are applied first, as a user upgrading does: Helm installs a chart's CRDs only once.
    """
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kubectl.run("wait", "--for", "condition=established", "--timeout=60s", "-f", str(CRDS))
    remove_pre_chart_install(kubectl)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(operator_values(image, env, **(values or {})), f)
        f.flush()
        helm(
            kubectl, "upgrade", "--install", RELEASE, str(chart), "--namespace", OPERATOR_NAMESPACE,
            "--create-namespace", "--values", f.name, "--wait", f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )  # fmt: skip
    kubectl.run(
        "-n",
        OPERATOR_NAMESPACE,
        "rollout",
        "status",
        f"deployment/{OPERATOR}",
        f"--timeout={int(timeout)}s",
        timeout=timeout + 10,
    )
    if (values or {}).get("webhook", {}).get("enabled", True):
        wait_for("the admission webhook registration", lambda: webhook_ready(kubectl), 60)
    wait_for("the replaced operator pods to be gone", lambda: only_the_new_operator_runs(kubectl), 90)


def only_the_new_operator_runs(kubectl: Kubectl) -> bool:
    """`rollout status` returns while replaced pods still terminate, and a terminating operator
    still handles events with its old settings: a test must not start before they are gone."""
    pods = kubectl.json("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", OPERATOR_PODS)
    return len(pods["items"]) == 1


def webhook_ready(kubectl: Kubectl) -> bool:
    proc = kubectl.try_run("get", "validatingwebhookconfiguration", "mlendpoints.io", "-o", "json")
    if proc.returncode != 0:
        return False
    hooks = json.loads(proc.stdout).get("webhooks", [])
    return bool(hooks) and all(h.get("clientConfig", {}).get("caBundle") for h in hooks)


def operator_pod(kubectl: Kubectl) -> str:
    pods = kubectl.json("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", OPERATOR_PODS)
    running = [
        p["metadata"]["name"]
        for p in pods["items"]
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    return running[0] if running else ""


def operator_metric(kubectl: Kubectl, pod: str, name: str) -> float:
    """Sum of a metric's samples, scraped through the API server's pod proxy."""
    return sum(operator_samples(kubectl, pod, name).values())


def operator_samples(kubectl: Kubectl, pod: str, name: str) -> dict[str, float]:
    """A metric's samples by their labels, scraped through the API server's pod proxy."""
    text = kubectl.run(
        "get", "--raw", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods/{pod}:9090/proxy/metrics"
    )
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(name))
    return {series[len(name) :]: float(value) for series, value in samples}
