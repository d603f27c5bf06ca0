"""Runs the operator in the cluster from its image, deployed by the plain manifests (crds/, deploy/).

Shared by the end-to-end suites that need the operator (online and batch) and by bench/operator.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.localcluster.fixture import wait_for

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_NAMESPACE = "mlendpoints-system"
OPERATOR = "mlendpoints-operator"


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


def deploy_operator(kubectl: Kubectl, image: str, env: Mapping[str, str], timeout: float = 180) -> None:
    """Install the CRDs and the operator (deploy/) from `image`, and wait until the operator pod is ready."""
    kubectl.run("apply", "-f", str(ROOT / "crds"))
    kubectl.run("wait", "--for", "condition=established", "--timeout=60s", "-f", str(ROOT / "crds"))
    kubectl.run("apply", "-f", str(ROOT / "deploy"))
    kubectl.run("-n", OPERATOR_NAMESPACE, "set", "image", f"deployment/{OPERATOR}", f"operator={image}")
    # A rebuilt image keeps its tag: restart so the pod runs the image just built.
    kubectl.run("-n", OPERATOR_NAMESPACE, "rollout", "restart", f"deployment/{OPERATOR}")
    if env:
        kubectl.run(
            "-n",
            OPERATOR_NAMESPACE,
            "set",
            "env",
            f"deployment/{OPERATOR}",
            *(f"{k}={v}" for k, v in env.items()),
        )
    kubectl.run(
        "-n",
        OPERATOR_NAMESPACE,
        "rollout",
        "status",
        f"deployment/{OPERATOR}",
        f"--timeout={int(timeout)}s",
        timeout=timeout + 10,
    )
    wait_for("the admission webhook registration", lambda: webhook_ready(kubectl), 60)
    wait_for("the replaced operator pods to be gone", lambda: only_the_new_operator_runs(kubectl), 90)


def only_the_new_operator_runs(kubectl: Kubectl) -> bool:
    """`rollout status` returns while replaced pods still terminate, and a terminating operator
    still handles events with its old settings: a test must not start before they are gone."""
    pods = kubectl.json("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/name={OPERATOR}")
    return len(pods["items"]) == 1


def webhook_ready(kubectl: Kubectl) -> bool:
    proc = kubectl.try_run("get", "validatingwebhookconfiguration", "mlendpoints.io", "-o", "json")
    if proc.returncode != 0:
        return False
    hooks = json.loads(proc.stdout).get("webhooks", [])
    return bool(hooks) and all(h.get("clientConfig", {}).get("caBundle") for h in hooks)


def operator_pod(kubectl: Kubectl) -> str:
    pods = kubectl.json("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/name={OPERATOR}")
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
