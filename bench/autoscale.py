"""Autoscaling benchmark on the local cluster: `python -m bench.autoscale` (issue 16).

The operator runs in the cluster from its image (the Helm chart, as the e2e suite installs it),
MLflow on this machine serves the diabetes model. Measured, in one run:
- cold start: the first request to a deployment at 0 pods (image cached) until its answer, 5 tries;
- a step from 2 to 64 concurrent clients (wrk, keep-alive) on a deployment scaled on load
  (`targetConcurrency: 8`, at most 8 pods): seconds until 8 pods are wanted, and until 8 are ready;
  wrk's p99 and failures during the step;
- the same step on a deployment scaled by the HPA on CPU (50% of a 100m request, at most 8 pods);
- the load removed: seconds until the first scale-down, and until 0 pods; failures at any point.
The router's own overhead of the reporting is measured by `python -m bench.router autoscale`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.report import table, write_section
from e2e.localcluster.fixture import _Substrate
from e2e.operator_deploy import Kubectl, deploy_operator, wait_for
from tests.fixtures.mlflow_server import serve

API = "mlendpoints.io/v1alpha1"
ROW = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)
STEP_S = 30
MAX_PODS = 8
# Windows shorter than the defaults (60 s stable, 300 s to zero) keep the run within minutes.
STABLE_S, ZERO_AFTER_S = 20, 10


def manifests(scale: dict[str, Any], cpu: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": API,
            "kind": "OnlineEndpoint",
            "metadata": {"name": "auto"},
            "spec": {"traffic": {"blue": 100}, "router": {"replicas": 1}},
        },
        {
            "apiVersion": API,
            "kind": "OnlineDeployment",
            "metadata": {"name": "blue"},
            "spec": {
                "endpointName": "auto",
                "model": "models:/diabetes/1",
                "workers": 1,
                "resources": {"requests": {"cpu": cpu, "memory": "128Mi"}},
                "scaleSettings": scale,
            },
        },
    ]


class Target:
    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl, self.namespace = kubectl, namespace
        service = kubectl.json("-n", namespace, "get", "service", "auto")
        secret = kubectl.json("-n", namespace, "get", "secret", "auto-keys")
        self.url = f"http://{service['spec']['clusterIP']}/score"
        self.key = base64.b64decode(secret["data"]["primaryKey"]).decode()

    def score(self) -> int:
        request = urllib.request.Request(
            self.url,
            data=json.dumps({"input_data": [ROW]}).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=90) as resp:
                return int(resp.status)
        except OSError as exc:
            return int(getattr(exc, "code", 0))

    def pods(self) -> tuple[int, int]:
        obj = self.kubectl.json("-n", self.namespace, "get", "deployment", "blue-server")
        return int(obj["spec"].get("replicas", 0)), int(obj.get("status", {}).get("readyReplicas") or 0)

    def wrk(self, connections: int, seconds: int, out: Path) -> subprocess.Popen[str]:
        script = out.with_suffix(".lua")
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps({'input_data': [ROW]}))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {self.key}"\n'
        )
        return subprocess.Popen(
            ["wrk", "-t", "2" if connections > 2 else "1", "-c", str(connections), "-d", f"{seconds}s",
             "--timeout", "60s", "--latency", "-s", str(script), self.url],
            stdout=out.open("w"), stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


def wrk_result(path: Path) -> dict[str, float]:
    text = path.read_text()
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    requests = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "p99_ms": float(p99.group(1)) * units[p99.group(2)] if p99 else float("nan"),
        "requests": float(requests.group(1)) if requests else 0.0,
        "failed": float(non2xx.group(1) if non2xx else 0)
        + (sum(map(float, errors.groups())) if errors else 0),
    }


def step(target: Target, tmp: Path, label: str) -> dict[str, float]:
    """2 clients for 10 s, then 64 for STEP_S: when the wanted and the ready pods reach MAX_PODS."""
    base = target.wrk(2, 10, tmp / f"{label}-base.txt")
    base.wait()
    started = time.monotonic()
    load = target.wrk(64, STEP_S, tmp / f"{label}-step.txt")
    wanted_at = ready_at = float("nan")
    peak = 0
    while load.poll() is None:
        wanted, ready = target.pods()
        peak = max(peak, ready)
        now = time.monotonic() - started
        if wanted >= MAX_PODS and wanted_at != wanted_at:
            wanted_at = now
        if ready >= MAX_PODS and ready_at != ready_at:
            ready_at = now
        time.sleep(0.5)
    return {
        "wanted_s": wanted_at,
        "ready_s": ready_at,
        "peak_ready": peak,
        **wrk_result(tmp / f"{label}-step.txt"),
        "base_failed": wrk_result(tmp / f"{label}-base.txt")["failed"],
    }


def _at(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def cold_phases(kubectl: Kubectl, namespace: str, sent: float, answered: float) -> tuple[float, ...]:
    """Where a cold start's time goes (the API's timestamps have whole seconds): request -> pod
    created (the scaler), -> server container started (scheduling, sandbox, container), -> pod
    Ready (the server's start and model load), -> answered (the router seeing it, the request)."""
    pods = kubectl.json("-n", namespace, "get", "pods", "-l", "mlendpoints.io/component=server")["items"]
    pod = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
    created = _at(pod["metadata"]["creationTimestamp"])
    running = (pod["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("running", {})
    started = _at(running["startedAt"]) if running else float("nan")
    ready = next(
        (_at(c["lastTransitionTime"]) for c in pod["status"].get("conditions", []) if c["type"] == "Ready"),
        float("nan"),
    )
    return (created - sent, started - created, ready - started, answered - ready)


def fmt(seconds: float) -> str:
    return "not reached" if seconds != seconds else f"{seconds:.1f} s"


def run(tmp: Path) -> str:
    load_before = os.getloadavg()[0]
    substrate = _Substrate()
    substrate.build_images()
    if substrate.cluster is None or substrate.images is None:
        raise RuntimeError(substrate.cluster_error or substrate.images_error or "no cluster")
    kubectl = Kubectl(str(substrate.cluster.kubeconfig))
    (tmp / "mlflow").mkdir()
    with serve(tmp / "mlflow") as mlflow:
        env = {
            "MLENDPOINTS_MLFLOW_TRACKING_URI": mlflow.pod_url,
            "MLENDPOINTS_SERVING_IMAGE": substrate.images.serving,
        }
        deploy_operator(kubectl, substrate.images.operator, env)
        namespace = f"bench-autoscale-{int(time.time())}"
        kubectl.run("create", "namespace", namespace)
        try:
            return measure(kubectl, namespace, tmp, load_before)
        finally:
            kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def measure(kubectl: Kubectl, namespace: str, tmp: Path, load_before: float) -> str:
    concurrency = {
        "type": "concurrency", "minInstances": 0, "maxInstances": MAX_PODS, "targetConcurrency": 8,
        "stableWindowSeconds": STABLE_S, "scaleToZeroAfterSeconds": ZERO_AFTER_S,
    }  # fmt: skip
    kubectl.apply(manifests(concurrency, "50m"), namespace)
    wait_for("the router", lambda: kubectl.get("service", "auto", namespace), 120, interval=1)
    wait_for("the keys", lambda: kubectl.get("secret", "auto-keys", namespace), 120, interval=1)
    target = Target(kubectl, namespace)
    wait_for("a ready router", lambda: target.score() in (200, 503), 240, interval=1)

    cold, cold_failed, phases = [], 0, []
    for _ in range(5):
        wait_for("0 pods", lambda: target.pods() == (0, 0), 180, interval=0.5)
        time.sleep(1)
        sent, started = time.time(), time.monotonic()
        status = target.score()
        cold.append(time.monotonic() - started)
        cold_failed += status != 200
        phases.append(cold_phases(kubectl, namespace, sent, sent + cold[-1]))
    conc = step(target, tmp, "concurrency")
    removed = time.monotonic()
    down_at = zero_at = float("nan")
    while time.monotonic() - removed < STABLE_S + ZERO_AFTER_S + 120:
        wanted, _ = target.pods()
        now = time.monotonic() - removed
        if wanted < MAX_PODS and down_at != down_at:
            down_at = now
        if wanted == 0:
            zero_at = now
            break
        time.sleep(0.5)
    after_zero = target.score()  # wakes it once more: answered

    print(f"concurrency: cold {cold} ({cold_failed} failed), step {conc}, down {down_at}, zero {zero_at}")

    # The same step on the HPA (CPU): the same deployment switched to targetUtilization.
    hpa = {
        "type": "targetUtilization", "minInstances": 1, "maxInstances": MAX_PODS,
        "targetUtilizationPercentage": 50, "pollingInterval": 1, "stableWindowSeconds": STABLE_S,
    }  # fmt: skip
    kubectl.apply(manifests(hpa, "100m"), namespace)
    hpa_object = lambda: kubectl.get("horizontalpodautoscaler", "blue-server", namespace)  # noqa: E731
    wait_for("the HPA", hpa_object, 120, interval=1)
    kubectl.run("-n", namespace, "rollout", "status", "deployment/blue-server", "--timeout=300s", timeout=320)
    wait_for("1 ready pod", lambda: target.pods() == (1, 1), 240, interval=1)
    time.sleep(15)  # the HPA's first CPU reading (metrics-server resolution 10 s)
    cpu = step(target, tmp, "hpa")

    p50 = statistics.median(cold)
    rows = [
        ["Cold start: first request at 0 pods until its answer (p50 of 5)", f"{p50:.2f} s "
         f"(each: {', '.join(f'{c:.1f}' for c in cold)})", "≤ 5 s", "met" if p50 <= 5 else "missed"],
        ["… where it goes (medians, whole-second timestamps): request → pod created → server "
         "started → Ready → answered", " → ".join(f"{statistics.median(p[i] for p in phases):.0f} s"
         for i in range(4)), "", ""],
        ["Cold start failures", str(cold_failed), "0", "met" if cold_failed == 0 else "missed"],
        ["Step 2 → 64 clients, concurrency: 8 pods wanted", fmt(conc["wanted_s"]), "≤ 10 s",
         "met" if conc["wanted_s"] <= 10 else "missed"],
        ["… 8 pods ready", f"{fmt(conc['ready_s'])} (peak {conc['peak_ready']:.0f} ready)", "recorded", ""],
        ["… p99 during the step (wrk, 64 connections)", f"{conc['p99_ms']:.0f} ms", "recorded", ""],
        ["… failed requests (base + step)", f"{conc['failed'] + conc['base_failed']:.0f} "
         f"of {conc['requests']:.0f}", "0", "met" if conc["failed"] + conc["base_failed"] == 0 else "missed"],
        ["Same step, HPA on CPU: 8 pods wanted", fmt(cpu["wanted_s"]), "recorded", ""],
        ["… 8 pods ready", f"{fmt(cpu['ready_s'])} (peak {cpu['peak_ready']:.0f} ready)", "recorded", ""],
        ["… p99 during the step", f"{cpu['p99_ms']:.0f} ms", "recorded", ""],
        ["… failed requests (429: no holding without maxQueueWaitMs, the router sheds what its pods "
         "cannot take)", f"{cpu['failed'] + cpu['base_failed']:.0f} of {cpu['requests']:.0f}",
         "recorded", ""],
        ["Load removed: first step down (the pods follow the stable average as it decays)",
         fmt(down_at), "recorded", ""],
        ["… 0 pods", fmt(zero_at), f"once the {STABLE_S} s stable average is 0 and {ZERO_AFTER_S} s idle",
         "met" if zero_at == zero_at and zero_at >= max(STABLE_S, ZERO_AFTER_S) - 1 else "missed"],
        ["… a request after reaching 0", str(after_zero), "200", "met" if after_zero == 200 else "missed"],
    ]  # fmt: skip
    return (
        f"The local cluster (one node, 2 cores shared with the control plane and wrk); operator from its "
        f"image; the diabetes model (`models:/diabetes/1`) behind one router pod. Concurrency scaling: "
        f"`targetConcurrency: 8`, 0 to {MAX_PODS} pods, stable window {STABLE_S} s, zero after "
        f"{ZERO_AFTER_S} s (shortened from the defaults, 60 s and 300 s, to keep the run short). HPA: 50% of "
        f"a 100m CPU request, 1 to {MAX_PODS} pods, scale-down stabilization {STABLE_S} s, the local "
        "cluster's HPA sync period 5 s. wrk with keep-alive connections POSTs one row. "
        f"Load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n\n"
        + table(["Measure", "Result", "Target", "Verdict"], rows)
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-autoscale-") as tmp:
        body = run(Path(tmp))
    write_section(
        "autoscale",
        "Autoscaling on the local cluster (scaleSettings concurrency and targetUtilization)",
        "flock -o /tmp/mlendpoints-bench.lock .venv/bin/python -m bench.autoscale",
        body,
    )
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
