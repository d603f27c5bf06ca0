"""Operator benchmark on the local cluster: `python -m bench.operator [--endpoints 300]`.

Runs the operator as a process on this machine against the cluster's API server and measures
- apply of an endpoint with two deployments -> all its children exist (p50/p95 over repetitions);
- an edit of the traffic split -> the router's ConfigMap carries it (the router watches it);
- N endpoints x 2 deployments in one namespace -> all reconciled (every child and status written),
  with the operator's peak RSS and its CPU while idle afterwards.
On a cluster with nodes the namespace gets a ResourceQuota of 0 pods: the control plane does all
its work, while the node is not asked to run 3N pods. Targets (issue 5): 2 s p50, 1 s, 3 min, 250 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.report import table, write_section
from e2e.operator_deploy import ROOT, Kubectl, wait_for
from mlendpoints.operator.kube import Kube, load_configuration

API = "mlendpoints.io/v1alpha1"
METRICS_PORT = 19099
QUIET_S = 5.0
CHILDREN = [
    ("configmap", "{e}-router"),
    ("secret", "{e}-keys"),
    ("service", "{e}"),
    ("deployment", "{e}-router"),
    ("serviceaccount", "{e}-router"),
    ("role", "{e}-router"),
    ("rolebinding", "{e}-router"),
    ("poddisruptionbudget", "{e}-router"),
    ("deployment", "{e}-blue-server"),
    ("service", "{e}-blue-server"),
    ("deployment", "{e}-green-server"),
    ("service", "{e}-green-server"),
]


def manifests(name: str, traffic: dict[str, int]) -> list[dict[str, Any]]:
    def dep(color: str) -> dict[str, Any]:
        return {
            "apiVersion": API,
            "kind": "OnlineDeployment",
            "metadata": {"name": f"{name}-{color}"},
            "spec": {"endpointName": name, "model": "models:/diabetes/1"},
        }

    return [
        {
            "apiVersion": API,
            "kind": "OnlineEndpoint",
            "metadata": {"name": name},
            "spec": {"traffic": traffic},
        },
        dep("blue"),
        dep("green"),
    ]


async def create_all(kubeconfig: str, namespace: str, objects: list[dict[str, Any]]) -> float:
    """Create the objects 16 at a time (kubectl, one object after another, would be the bottleneck)."""
    kube = Kube(load_configuration(kubeconfig), "bench")
    started = time.monotonic()
    try:
        slots = asyncio.Semaphore(16)

        async def create(obj: dict[str, Any]) -> None:
            async with slots:
                await kube.create({**obj, "metadata": {**obj["metadata"], "namespace": namespace}})

        await asyncio.gather(*(create(o) for o in objects))
    finally:
        await kube.close()
    return time.monotonic() - started


def existing(kubectl: Kubectl, namespace: str) -> set[str]:
    kinds = "configmaps,secrets,services,deployments,serviceaccounts,roles,rolebindings,poddisruptionbudgets"
    items = kubectl.json("-n", namespace, "get", kinds)["items"]
    return {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in items}


def start_operator(kubeconfig: str, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "MLENDPOINTS_NAMESPACES": json.dumps([namespace]),
        "MLENDPOINTS_STANDALONE": "true",
        "MLENDPOINTS_METRICS_PORT": str(METRICS_PORT),
        "MLENDPOINTS_HEALTH_PORT": "18089",
        "MLENDPOINTS_SERVING_IMAGE": "mlendpoints/serving:dev",
        "MLENDPOINTS_LOG_LEVEL": "warning",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mlendpoints.operator"], env=env, stdout=out, stderr=out
        )


def reconciles() -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("mlendpoints_operator_reconciles_total")
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.operator")
    parser.add_argument("--endpoints", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".cache/mlendpoints/cluster/kubeconfig")
    kubectl = Kubectl(kubeconfig)
    kubectl.run("apply", "-f", str(ROOT / "crds"))
    nodes = len(kubectl.json("get", "nodes")["items"])
    server = kubectl.json("version")["serverVersion"]["gitVersion"]
    namespace = f"bench-operator-{int(time.time())}"
    kubectl.run("create", "namespace", namespace)
    if nodes:  # the node must not be asked to run 3N pods: a quota of 0 pods keeps them unborn
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-pods"},
            "spec": {"hard": {"pods": "0"}},
        }
        kubectl.apply([quota], namespace)
    log = Path(tempfile.mkdtemp()) / "operator.log"
    proc = start_operator(kubeconfig, namespace, log)
    try:
        time.sleep(3)
        create_s, traffic_s = [], []
        for i in range(args.repeats):
            name = f"single-{i}"
            started = time.monotonic()
            kubectl.apply(manifests(name, {f"{name}-blue": 100}), namespace)
            expected = {f"{k}/{n.format(e=name)}" for k, n in CHILDREN}

            def created(e: set[str] = expected) -> bool:
                return e <= existing(kubectl, namespace)

            wait_for("children", created, 60, interval=0.05)
            create_s.append(time.monotonic() - started)
            started = time.monotonic()
            kubectl.run(
                "-n",
                namespace,
                "patch",
                "onlineendpoint",
                name,
                "--type",
                "merge",
                "-p",
                json.dumps({"spec": {"traffic": {f"{name}-blue": 0, f"{name}-green": 100}}}),
            )

            def moved(n: str = name) -> bool:
                data = kubectl.json("-n", namespace, "get", "configmap", f"{n}-router")["data"]["router.json"]
                return json.loads(data)["traffic"].get(f"{n}-green") == 100

            wait_for("the new split in the router ConfigMap", moved, 30, interval=0.05)
            traffic_s.append(time.monotonic() - started)

        scale = [
            m
            for i in range(args.endpoints)
            for m in manifests(f"scale-{i:03d}", {f"scale-{i:03d}-blue": 100})
        ]
        started = time.monotonic()
        submit_s = asyncio.run(create_all(kubeconfig, namespace, scale))

        want = {f"{k}/{n.format(e=f'scale-{i:03d}')}" for i in range(args.endpoints) for k, n in CHILDREN}

        def converged() -> bool:
            items = kubectl.json("-n", namespace, "get", "onlineendpoints,onlinedeployments")["items"]
            scale = [o for o in items if o["metadata"]["name"].startswith("scale-")]
            reconciled = len(scale) == 3 * args.endpoints and all(
                (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
                for o in scale
            )
            return reconciled and want <= existing(kubectl, namespace)

        wait_for("all endpoints reconciled", converged, 600, interval=2)
        scale_s = time.monotonic() - started
        # Quiet = no reconcile for QUIET_S: the operator has also followed every status change of the
        # children (at the pace the controller manager makes them).
        last = (reconciles(), time.monotonic())
        while time.monotonic() - last[1] < QUIET_S:
            time.sleep(0.5)
            if (count := reconciles()) != last[0]:
                last = (count, time.monotonic())
        quiet_s = last[1] - started
        cpu_before, reconciles_before = cpu_seconds(proc.pid), reconciles()
        time.sleep(30)
        idle_cpu = (cpu_seconds(proc.pid) - cpu_before) / 30 * 100
        idle_reconciles = reconciles() - reconciles_before
        peak_rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        kubectl.try_run("delete", "namespace", namespace, "--wait=false")

    p50_create = statistics.median(create_s)
    p50_traffic = statistics.median(traffic_s)
    rows: list[list[object]] = [
        [
            "apply endpoint + 2 deployments -> all children",
            f"{p50_create:.2f} s p50 (max {max(create_s):.2f})",
            "<= 2 s p50",
            f"{p50_create / 2:.2f}x",
        ],
        [
            "traffic edit -> router ConfigMap updated",
            f"{p50_traffic:.2f} s p50 (max {max(traffic_s):.2f})",
            "<= 1 s",
            f"{p50_traffic / 1:.2f}x",
        ],
        [
            f"{args.endpoints} endpoints x 2 deployments reconciled",
            f"{scale_s:.1f} s (resources created in the first {submit_s:.1f} s; quiet after {quiet_s:.0f} s)",
            "<= 180 s",
            f"{scale_s / 180:.2f}x",
        ],
        ["operator peak RSS", f"{peak_rss:.0f} MB", "<= 250 MB", f"{peak_rss / 250:.2f}x"],
        [
            "operator CPU when idle (30 s)",
            f"{idle_cpu:.2f} % of a core ({idle_reconciles:.0f} reconciles)",
            "near zero",
            "",
        ],
    ]
    where = (
        f"a Kubernetes {server} cluster with {nodes} node(s)"
        if nodes
        else f"a Kubernetes {server} control plane without nodes (etcd, API server, controller manager)"
    )
    body = (
        table(["measure", "result", "target", "ratio to target"], rows)
        + f"\n\n{args.repeats} repetitions for the first two rows. The operator ran as a process on this"
        f" machine against {where}"
        + ("; the namespace had a ResourceQuota of 0 pods" if nodes else "")
        + ", so every object was created and reconciled but no pod ran. Scale row: until every resource has"
        " all its children and a status for its current generation; 'quiet' is when the operator has also"
        " followed every later status change of the children, which the controller manager (20 API"
        " requests/s by default) makes for minutes. The traffic row stops at the ConfigMap the router watches"
        " (by watch); the e2e test times edit-to-router with pods.\n"
    )
    write_section("operator", "Operator", f"python -m bench.operator --endpoints {args.endpoints}", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
