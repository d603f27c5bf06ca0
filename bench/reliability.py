"""Reliability under steady load on the local cluster: `python -m bench.reliability` (issue 15).

The operator runs in the cluster from its image (the Helm chart), MLflow on this machine serves the diabetes
model (v1: alpha 1.0, v2: alpha 0.1; `champion` -> v1). A load generator on this machine sends about
200 requests/s, paced, over 16 keep-alive connections, to the endpoint's Service; every request is
counted, every failure classified (HTTP status, connection refused, reset, closed without an answer,
timeout), with the deployment that answered (`x-mlendpoints-served-by`) and the model version (told by the
prediction: v1 and v2 answer the row differently). Around each event the load runs for a bounded time:
1. the model changes v1 -> v2 (a rolling update);
2. `models:/diabetes@champion` moves to v2, `modelRefreshInterval: 10`;
3. a model-server pod deleted (graceful, as a drain does), 2 replicas;
4. a router pod deleted (graceful), 2 router replicas;
5. a model-server pod's main process SIGKILLed on this host (the cluster's containerd runs here);
6. kube-apiserver stopped for 20 s, then started (`cluster.sh restart-apiserver 20`), then a traffic edit;
7. the operator SIGKILLed 5 times at random moments while 20 endpoints are applied (a namespace with a
   ResourceQuota of 0 pods), compared with a clean run of the same 20;
8. a mirrored deployment crash-looping (50% mirror to a server whose scoring script exits on its first
   request), against the same load without the mirror, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from bench.report import table, write_section
from e2e.localcluster.fixture import CLUSTER_SH, _Substrate
from e2e.operator_deploy import OPERATOR_NAMESPACE, OPERATOR_PODS, Kubectl, deploy_operator, wait_for
from tests.fixtures.mlflow_server import serve

API = "mlendpoints.io/v1alpha1"
GROUP, VERSION = "mlendpoints.io", "v1alpha1"
ROW = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)
RATE = 200.0
CONNECTIONS = 16
TIMEOUT_S = 10.0
REFRESH_S = 10
APISERVER_DOWN_S = 20
KILLS = 5
CHURN_ENDPOINTS = 20
BEFORE_S = 5.0  # load before each event
AFTER_S = 5.0  # load after the event has settled
MIRROR_WINDOW_S = 30.0
MODEL_VERSION_ANNOTATION = "mlendpoints.io/model-version"  # render/common.py: on the pod template
CACHE = Path(os.environ.get("MLENDPOINTS_CACHE", Path.home() / ".cache" / "mlendpoints"))
# containerd's per-task state: init.pid is the container's main process on this host.
TASKS = CACHE / "cluster" / "run" / "containerd" / "state" / "io.containerd.runtime.v2.task" / "k8s.io"
CRASH_SCRIPT = "import os\n\n\ndef init():\n    pass\n\n\ndef run(raw_data):\n    os._exit(1)\n"
CHILD_KINDS = (
    "configmaps,secrets,services,deployments,serviceaccounts,roles,rolebindings,poddisruptionbudgets,"
    "horizontalpodautoscalers,networkpolicies,replicasets"
)
VOLATILE_ANNOTATIONS = {
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
    "mlendpoints.io/config-hash",  # hashes the whole child, the owner's uid and the namespace included
}


# --- the load ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rec:
    sent: float  # time.monotonic()
    done: float
    outcome: str  # "ok", or the failure's class
    served_by: str
    value: float | None  # the prediction


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ClosedWithoutAnswer(Exception):
    pass


def first_number(data: Any) -> float | None:
    if isinstance(data, bool):
        return None
    if isinstance(data, int | float):
        return float(data)
    if isinstance(data, dict):
        data = [data["predictions"]] if "predictions" in data else list(data.values())
    if isinstance(data, list):
        for item in data:
            if (found := first_number(item)) is not None:
                return found
    return None


class Load:
    """RATE requests/s, paced over CONNECTIONS keep-alive connections (a slot missed while a request is
    slow is skipped, not made up in a burst), on an event loop of its own thread."""

    def __init__(
        self, host: str, key: str, rate: float = RATE, connections: int = CONNECTIONS, port: int = 80
    ) -> None:
        self.host, self.port, self.rate, self.connections = host, port, rate, connections
        body = json.dumps({"input_data": [ROW]}).encode()
        head = (
            f"POST /score HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.request = head.encode() + body
        self.records: list[Rec] = []
        self.in_flight: dict[int, float] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Rec]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT_S + 10)
        return list(self.records)

    def since(self, t: float) -> list[Rec]:
        return [r for r in list(self.records) if r.sent >= t]

    async def _main(self) -> None:
        t0 = time.monotonic()
        await asyncio.gather(*(self._worker(k, t0) for k in range(self.connections)))

    async def _exchange(self, conn: Conn) -> tuple[int, dict[str, str], bytes]:
        reader, writer = conn
        writer.write(self.request)
        line = await reader.readline()
        if not line:
            raise ClosedWithoutAnswer
        status = int(line.split(None, 2)[1])
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if not raw:
                raise ClosedWithoutAnswer
            if raw in (b"\r\n", b"\n"):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def _send(self, box: list[Conn | None]) -> tuple[int, dict[str, str], bytes]:
        conn = box[0]
        if conn is None:
            conn = box[0] = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(conn)

    async def _worker(self, k: int, t0: float) -> None:
        interval = self.connections / self.rate
        next_at = t0 + k / self.rate
        box: list[Conn | None] = [None]  # this worker's keep-alive connection
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stop.is_set():
                break
            # A connection the server closed while idle is not reused (as HTTP clients check).
            conn = box[0]
            if conn is not None and (conn[0].at_eof() or conn[1].is_closing()):
                conn[1].close()
                box[0] = None
            rid = next(self._ids)
            sent = time.monotonic()
            self.in_flight[rid] = sent
            outcome, served, value, close = "ok", "", None, False
            try:
                status, headers, body = await asyncio.wait_for(self._send(box), TIMEOUT_S)
                served = headers.get("x-mlendpoints-served-by", "")
                if status != 200:
                    outcome = f"HTTP {status}"
                else:
                    with contextlib.suppress(ValueError):
                        value = first_number(json.loads(body))
                close = headers.get("connection", "").lower() == "close"
            except TimeoutError:
                outcome = "timeout"
            except ConnectionRefusedError:
                outcome = "refused"
            except (ConnectionResetError, BrokenPipeError):
                outcome = "reset"
            except (asyncio.IncompleteReadError, ClosedWithoutAnswer):
                outcome = "closed without answer"
            except OSError as exc:
                outcome = f"error {exc.errno}"
            except (ValueError, IndexError):
                outcome = "malformed answer"
            finally:
                self.in_flight.pop(rid, None)
            if close or (outcome != "ok" and not outcome.startswith("HTTP")):
                if (conn := box[0]) is not None:
                    conn[1].close()
                box[0] = None
            self.records.append(Rec(sent, time.monotonic(), outcome, served, value))
            next_at += interval
            if next_at < time.monotonic():
                next_at = time.monotonic()
        if (conn := box[0]) is not None:
            conn[1].close()


def failures(recs: list[Rec]) -> Counter[str]:
    return Counter(r.outcome for r in recs if r.outcome != "ok")


def fmt_failed(recs: list[Rec]) -> str:
    failed = failures(recs)
    total = sum(failed.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{n} {what}" for what, n in failed.most_common()) + ")"


def p99_ms(recs: list[Rec]) -> float:
    latencies = sorted((r.done - r.sent) * 1000 for r in recs if r.outcome == "ok")
    if not latencies:
        return float("nan")
    return latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]


# --- the cluster ------------------------------------------------------------------------------------
class Cluster:
    def __init__(self, api_client: k8s.ApiClient, kubectl: Kubectl, namespace: str) -> None:
        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.kubectl, self.ns = kubectl, namespace

    @staticmethod
    def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        resp = call(*args, _preload_content=False, _request_timeout=5, **kwargs)
        return json.loads(resp.data)

    def deployment(self, name: str, ns: str | None = None) -> dict[str, Any]:
        return self.raw(self.apps.read_namespaced_deployment, name, ns or self.ns)  # type: ignore[no-any-return]

    def pods(self, deployment: str, ns: str | None = None, terminating: bool = False) -> list[dict[str, Any]]:
        d = self.deployment(deployment, ns)
        selector = ",".join(f"{k}={v}" for k, v in d["spec"]["selector"]["matchLabels"].items())
        items = self.raw(self.core.list_namespaced_pod, ns or self.ns, label_selector=selector)["items"]
        return [p for p in items if terminating or not p["metadata"].get("deletionTimestamp")]

    def template_version(self, deployment: str) -> str | None:
        annotations = self.deployment(deployment)["spec"]["template"]["metadata"].get("annotations") or {}
        return annotations.get(MODEL_VERSION_ANNOTATION)

    def rolled_out(self, name: str, ns: str | None = None) -> bool:
        """The Deployment's newest template runs on all its replicas, all ready, and no other pod is left
        (terminating ones included)."""
        try:
            d = self.deployment(name, ns)
            want, status = d["spec"]["replicas"], d.get("status") or {}
            if status.get("observedGeneration", 0) < d["metadata"]["generation"]:
                return False
            counts = [status.get(k, 0) for k in ("updatedReplicas", "readyReplicas", "replicas")]
            if counts != [want] * 3:
                return False
            pods = self.pods(name, ns, terminating=True)
            return len(pods) == want and all(
                ready(p) and not p["metadata"].get("deletionTimestamp") for p in pods
            )
        except (ApiException, OSError, ValueError, KeyError):
            return False

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> None:
        self.kubectl.run("-n", self.ns, "patch", plural, name, "--type", "merge", "-p", json.dumps(body))


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def main_pid(pod: dict[str, Any], expect: str) -> int:
    """The host pid of the pod's (first) container's main process, checked to be running `expect`."""
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    pid = int((TASKS / container_id / "init.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if expect not in cmdline:
        raise RuntimeError(f"pid {pid} of {pod['metadata']['name']} runs {cmdline!r}, not {expect}")
    return pid


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> float | None:
    """Seconds until `predicate` held, or None after `timeout` (API errors count as not yet)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:  # the API server away (event 6), an object not there yet
            pass
        time.sleep(interval)
    return None


# --- the endpoint -----------------------------------------------------------------------------------
def endpoint_manifests() -> list[dict[str, Any]]:
    def deployment(name: str, model: str, replicas: int) -> dict[str, Any]:
        return {
            "apiVersion": API,
            "kind": "OnlineDeployment",
            "metadata": {"name": name},
            "spec": {
                "endpointName": "rel",
                "model": model,
                "instanceCount": replicas,
                "workers": 1,
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            },
        }

    return [
        {
            "apiVersion": API,
            "kind": "OnlineEndpoint",
            "metadata": {"name": "rel"},
            "spec": {"traffic": {"blue": 100, "green": 0}, "router": {"replicas": 2}},
        },
        deployment("blue", "models:/diabetes/1", 2),
        deployment("green", "models:/diabetes/2", 1),
    ]


@dataclass
class Row:
    event: str
    requests: str
    failed: str
    target: str
    verdict: str
    load: str = ""


class Bench:
    def __init__(self, cluster: Cluster, kubectl: Kubectl, mlflow_url: str) -> None:
        self.c, self.kubectl, self.mlflow_url = cluster, kubectl, mlflow_url
        self.predictions: dict[str, float] = {}
        service = kubectl.json("-n", cluster.ns, "get", "service", "rel")
        self.host = service["spec"]["clusterIP"]
        secret = kubectl.json("-n", cluster.ns, "get", "secret", "rel-keys")
        self.key = base64.b64decode(secret["data"]["primaryKey"]).decode()

    def load(self) -> Load:
        return Load(self.host, self.key)

    def pinned_value(self, deployment: str) -> float:
        request = urllib.request.Request(
            f"http://{self.host}/score",
            data=json.dumps({"input_data": [ROW]}).encode(),
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
                "x-mlendpoints-deployment": deployment,
            },
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            value = first_number(json.loads(resp.read()))
        if value is None:
            raise RuntimeError(f"no prediction in {deployment}'s answer")
        return value

    def version(self, rec: Rec) -> str:
        if rec.value is None:
            return "?"
        for name, value in self.predictions.items():
            if abs(rec.value - value) <= 1e-6 * max(1.0, abs(value)):
                return name
        return "?"

    def probe_all(self, check: Callable[[Rec], bool], n: int = 40, timeout: float = 90) -> bool:
        """Short load until `n` answers in a row pass `check`."""
        with self.load() as load:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                time.sleep(0.5)
                recs = list(load.records)
                if len(recs) >= n and all(check(r) for r in recs[-n:]):
                    return True
        return False

    # --- events ---------------------------------------------------------------------------------
    def rolling_update(self) -> Row:
        with self.load() as load:
            time.sleep(BEFORE_S)
            self.c.patch("onlinedeployment", "blue", {"spec": {"model": "models:/diabetes/2"}})
            took = wait_until(
                lambda: self.c.template_version("blue-server") == "2" and self.c.rolled_out("blue-server"),
                240,
            )
            t_done = time.monotonic()
            time.sleep(AFTER_S)
        recs = load.stop()
        after = [r for r in recs if r.sent >= t_done and r.outcome == "ok"]
        versions = Counter(self.version(r) for r in after)
        only_v2 = bool(after) and set(versions) == {"v2"}
        ok = not failures(recs) and only_v2 and took is not None
        check = (
            f"rollout {took:.1f} s; after it {versions.get('v2', 0)} answers v2, "
            f"{sum(n for v, n in versions.items() if v != 'v2')} other"
            if took is not None
            else "rollout not finished in 240 s"
        )
        return Row("1. model v1 -> v2 (rolling update, 2 replicas)", str(len(recs)), fmt_failed(recs),
                   "0 failed; afterwards only v2 answers", verdict(ok, check))  # fmt: skip

    def alias_moves(self) -> Row:
        from mlflow import MlflowClient

        # Setup, without load: the deployment follows the alias (champion -> v1 now).
        self.c.patch(
            "onlinedeployment",
            "blue",
            {"spec": {"model": "models:/diabetes@champion", "modelRefreshInterval": REFRESH_S}},
        )
        if (
            wait_until(
                lambda: self.c.template_version("blue-server") == "1" and self.c.rolled_out("blue-server"),
                240,
            )
            is None
        ):
            raise RuntimeError("blue did not roll onto models:/diabetes@champion (v1) within 240 s")
        noticed: list[float] = []

        def rolled() -> bool:
            if self.c.template_version("blue-server") != "2":
                return False
            if not noticed:
                noticed.append(time.monotonic())
            return self.c.rolled_out("blue-server")

        with self.load() as load:
            time.sleep(BEFORE_S)
            t_event = time.monotonic()
            MlflowClient(self.mlflow_url).set_registered_model_alias("diabetes", "champion", "2")
            took = wait_until(rolled, REFRESH_S + 240)
            t_done = time.monotonic()
            time.sleep(AFTER_S)
        recs = load.stop()
        during = [r for r in recs if r.sent >= t_event and r.outcome == "ok"]
        first_v2 = next((r.done - t_event for r in during if self.version(r) == "v2"), None)
        last_other = max((r.done - t_event for r in during if self.version(r) != "v2"), default=0.0)
        after = [r for r in recs if r.sent >= t_done and r.outcome == "ok"]
        only_v2 = bool(after) and all(self.version(r) == "v2" for r in after)
        if took is None or not noticed:
            return Row(
                "2. `@champion` moves v1 -> v2 (modelRefreshInterval 10 s)",
                str(len(recs)),
                fmt_failed(recs),
                f"0 failed; v2 within {REFRESH_S} s + rollout",
                verdict(False, "no rollout within the bound"),
            )
        noticed_s, rollout_s = noticed[0] - t_event, took - (noticed[0] - t_event)
        ok = not failures(recs) and only_v2 and noticed_s <= REFRESH_S + 5 and last_other <= took + 1
        check = (
            f"pods' template changed {noticed_s:.1f} s after the move, rollout {rollout_s:.1f} s more; "
            f"first v2 answer at {fmt_s(first_v2)}, only v2 from {last_other:.1f} s"
        )
        return Row(
            "2. `@champion` moves v1 -> v2 (modelRefreshInterval 10 s)",
            str(len(recs)),
            fmt_failed(recs),
            f"0 failed; v2 within {REFRESH_S} s + rollout",
            verdict(ok, check),
        )

    def delete_pod(self, deployment: str, label: str) -> Row:
        victim = self.c.pods(deployment)[0]["metadata"]["name"]

        def replaced() -> bool:
            names = {p["metadata"]["name"] for p in self.c.pods(deployment, terminating=True)}
            return victim not in names and self.c.rolled_out(deployment)

        with self.load() as load:
            time.sleep(BEFORE_S)
            self.kubectl.run("-n", self.c.ns, "delete", "pod", victim, "--wait=false")
            took = wait_until(replaced, 180)
            time.sleep(AFTER_S)
        recs = load.stop()
        ok = not failures(recs) and took is not None
        check = f"replaced and the old pod gone after {fmt_s(took)}"
        return Row(label, str(len(recs)), fmt_failed(recs), "0 failed", verdict(ok, check))

    def sigkill_server(self) -> Row:
        pod = self.c.pods("blue-server")[0]
        name = pod["metadata"]["name"]
        restarts = pod["status"]["containerStatuses"][0].get("restartCount", 0)
        pid = main_pid(pod, "mlendpoints-serve")

        def back() -> bool:
            now = next((p for p in self.c.pods("blue-server") if p["metadata"]["name"] == name), None)
            if now is None:
                return False
            return now["status"]["containerStatuses"][0].get("restartCount", 0) > restarts and ready(now)

        with self.load() as load:
            time.sleep(BEFORE_S)
            in_flight = len(load.in_flight)
            os.kill(pid, signal.SIGKILL)
            took = wait_until(back, 180)
            time.sleep(AFTER_S)
        recs = load.stop()
        failed = sum(failures(recs).values())
        ok = failed <= in_flight and took is not None
        check = (
            f"{in_flight} requests in flight (to all pods) at the kill; the container restarted and was "
            f"ready again after {fmt_s(took)}"
        )
        return Row("5. a model-server pod's process SIGKILLed (kill -9 on the host)", str(len(recs)),
                   fmt_failed(recs), "failed ≤ requests in flight to it", verdict(ok, check))  # fmt: skip

    def apiserver_down(self) -> Row:
        with self.load() as load:
            time.sleep(BEFORE_S)
            started = time.monotonic()
            proc = subprocess.run(
                ["bash", str(CLUSTER_SH), "restart-apiserver", str(APISERVER_DOWN_S)],
                capture_output=True, text=True, timeout=240, check=False,
            )  # fmt: skip
            back_s = time.monotonic() - started
            if proc.returncode != 0:
                raise RuntimeError(f"cluster.sh restart-apiserver failed: {proc.stderr.strip()[-800:]}")
            time.sleep(AFTER_S)
            during = load.since(0.0)
            # The traffic edit, with the API server back: every answer from green.
            t_edit = time.monotonic()
            self.c.patch("onlineendpoint", "rel", {"spec": {"traffic": {"blue": 0, "green": 100}}})

            def switched() -> bool:
                recs = load.since(t_edit)
                return len(recs) >= 100 and all(r.served_by == "green" for r in recs[-100:])

            took = wait_until(switched, 120, interval=0.2)
            time.sleep(2)
        recs = load.stop()
        after_edit = [r for r in recs if r.sent >= t_edit]
        last_blue = max((r.done - t_edit for r in after_edit if r.served_by != "green"), default=0.0)
        ok = not failures(recs) and took is not None
        check = (
            f"down {APISERVER_DOWN_S} s, ready again {back_s:.0f} s after the stop began "
            f"({fmt_failed(during)} failed up to {AFTER_S:.0f} s after); traffic edit blue -> green: "
            + (f"only green answers {last_blue:.1f} s after it" if took is not None else "not in 120 s")
        )
        return Row(
            f"6. kube-apiserver stopped {APISERVER_DOWN_S} s, then started; then a traffic edit",
            str(len(recs)),
            fmt_failed(recs),
            "0 failed; the edit takes effect",
            verdict(ok, check),
        )

    def mirror_crashloop(self) -> Row:
        with self.load() as load:
            time.sleep(MIRROR_WINDOW_S)
        base = load.stop()
        self.kubectl.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "crash-code"},
                    "data": {"score.py": CRASH_SCRIPT},
                },
                {
                    "apiVersion": API,
                    "kind": "OnlineDeployment",
                    "metadata": {"name": "crash"},
                    "spec": {
                        "endpointName": "rel",
                        "model": "models:/diabetes/1",
                        "codeConfiguration": {"configMap": "crash-code", "scoringScript": "score.py"},
                        "instanceCount": 1,
                        "workers": 1,
                        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                    },
                },
            ],
            self.c.ns,
        )
        self.c.patch("onlineendpoint", "rel", {"spec": {"mirrorTraffic": {"crash": 50}}})
        if wait_until(lambda: self.c.rolled_out("crash-server"), 240) is None:
            raise RuntimeError("the crash deployment never had a ready pod in 240 s")
        with self.load() as load:
            time.sleep(MIRROR_WINDOW_S)
        mirrored = load.stop()
        pods = self.c.pods("crash-server")
        restarts = sum(p["status"]["containerStatuses"][0].get("restartCount", 0) for p in pods)
        p99_base, p99_mirror = p99_ms(base), p99_ms(mirrored)
        errors_base, errors_mirror = sum(failures(base).values()), sum(failures(mirrored).values())
        ok = errors_mirror <= errors_base and p99_mirror <= 1.5 * p99_base + 2 and restarts > 0
        check = (
            f"p99 {p99_base:.1f} ms without the mirror ({len(base)} requests, {fmt_failed(base)} failed), "
            f"{p99_mirror:.1f} ms with it; the mirrored server restarted {restarts} times in "
            f"{MIRROR_WINDOW_S:.0f} s"
        )
        return Row(
            "8. a mirrored deployment crash-looping (mirror 50%, its server exits on each request)",
            f"{len(base)} without / {len(mirrored)} with the mirror",
            f"{fmt_failed(base)} / {fmt_failed(mirrored)}",
            "live p99 and errors unchanged (p99 within 1.5 x + 2 ms)",
            verdict(ok, check),
        )


def verdict(ok: bool, check: str) -> str:
    return f"{'met' if ok else '**missed**'}: {check}"


def fmt_s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


# --- event 7: the operator killed while 20 endpoints are applied -------------------------------------
def churn_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(CHURN_ENDPOINTS):
        name = f"c{i:02d}"
        endpoint = {
            "apiVersion": API,
            "kind": "OnlineEndpoint",
            "metadata": {"name": name},
            "spec": {"traffic": {f"{name}-blue": 100}},
        }
        deployment = {
            "apiVersion": API,
            "kind": "OnlineDeployment",
            "metadata": {"name": f"{name}-blue"},
            "spec": {"endpointName": name, "model": "models:/diabetes/1"},
        }
        out += [("onlineendpoints", endpoint), ("onlinedeployments", deployment)]
    return out


def create_with_retry(c: Cluster, ns: str, plural: str, obj: dict[str, Any], timeout: float = 180) -> int:
    """Create, retrying what fails while the operator (its admission webhook) is down; the tries."""
    deadline = time.monotonic() + timeout
    for tries in itertools.count(1):
        try:
            c.custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, obj, _request_timeout=10)
            return tries
        except ApiException as exc:
            if exc.status == 409:
                return tries
            if time.monotonic() > deadline:
                raise
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)
    raise AssertionError("unreachable")


def churn_namespace(kubectl: Kubectl, ns: str) -> None:
    kubectl.run("create", "namespace", ns)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
             "spec": {"hard": {"pods": "0"}}}  # fmt: skip
    kubectl.apply([quota], ns)


def children(kubectl: Kubectl, ns: str) -> dict[str, dict[str, Any]]:
    """The operator's children in `ns`, normalized (no uids, times, cluster IPs, key values, namespace)."""
    items = kubectl.json("-n", ns, "get", CHILD_KINDS)["items"]
    out: dict[str, dict[str, Any]] = {}
    for obj in items:
        meta = obj["metadata"]
        owners = meta.get("ownerReferences") or []
        labels = meta.get("labels") or {}
        if obj["kind"] == "ReplicaSet":
            owner = next((o["name"] for o in owners if o["kind"] == "Deployment"), "?")
            # Named by the template's hash: one per template the Deployment had.
            key = f"ReplicaSet/of-{owner}/{len([k for k in out if k.startswith(f'ReplicaSet/of-{owner}/')])}"
            out[key] = {"owner": owner}
            continue
        if not (labels.get("app.kubernetes.io/managed-by") == "mlendpoints" or
                any(o["kind"] in ("OnlineEndpoint", "OnlineDeployment") for o in owners)):  # fmt: skip
            continue
        keep: dict[str, Any] = {
            "labels": labels,
            "annotations": {
                k: v for k, v in (meta.get("annotations") or {}).items() if k not in VOLATILE_ANNOTATIONS
            },
            "owners": sorted([o["kind"], o["name"], bool(o.get("controller"))] for o in owners),
        }
        for field in ("spec", "data", "rules", "subjects", "roleRef", "type"):
            if field in obj:
                keep[field] = obj[field]
        if obj["kind"] == "Secret":
            keep["data"] = sorted(obj.get("data") or {})
        if obj["kind"] == "Service":
            for field in ("clusterIP", "clusterIPs"):
                keep["spec"].pop(field, None)
        out[f"{obj['kind']}/{meta['name']}"] = json.loads(json.dumps(keep).replace(ns, "NAMESPACE"))
    return out


def keys_data(c: Cluster, ns: str) -> dict[str, dict[str, str]]:
    items = c.raw(c.core.list_namespaced_secret, ns)["items"]
    return {
        s["metadata"]["name"]: s.get("data") or {} for s in items if s["metadata"]["name"].endswith("-keys")
    }


def reconciled(c: Cluster, ns: str) -> bool:
    objs = []
    for plural in ("onlineendpoints", "onlinedeployments"):
        objs += c.raw(c.custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural)["items"]
    return len(objs) == 2 * CHURN_ENDPOINTS and all(
        (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"] for o in objs
    )


def without_replica_sets(objs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in objs.items() if not k.startswith("ReplicaSet/")}


def replica_sets(objs: dict[str, Any]) -> Counter[str]:
    return Counter(v["owner"] for k, v in objs.items() if k.startswith("ReplicaSet/"))


def differences(a: dict[str, Any], b: dict[str, Any], limit: int = 6) -> list[str]:
    out = [f"only in the clean run: {k}" for k in sorted(set(a) - set(b))]
    out += [f"only after the kills: {k}" for k in sorted(set(b) - set(a))]
    out += [f"differs: {k}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def operator_kills(c: Cluster, kubectl: Kubectl, stamp: int) -> Row:
    clean_ns, kill_ns = f"rel-clean-{stamp}", f"rel-kills-{stamp}"
    objects = churn_objects()
    # The clean run: the same 20 endpoints, nothing killed.
    churn_namespace(kubectl, clean_ns)
    started = time.monotonic()
    for plural, obj in objects:
        create_with_retry(c, clean_ns, plural, obj)
    if wait_until(lambda: reconciled(c, clean_ns), 300, interval=2) is None:
        raise RuntimeError("the clean run did not reconcile in 300 s")
    clean: dict[str, Any] = {}

    def stable() -> bool:
        nonlocal clean
        now = without_replica_sets(children(kubectl, clean_ns))
        same, clean = now == clean, now
        return same

    wait_until(stable, 120, interval=5)
    clean_s = time.monotonic() - started
    clean_rs = replica_sets(children(kubectl, clean_ns))

    # The run with kills: objects created one by one (0.2-0.8 s apart), the operator killed 5 times.
    churn_namespace(kubectl, kill_ns)
    seen: dict[str, dict[str, str]] = {}
    changed: set[str] = set()
    stop = threading.Event()

    def watch_keys() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                for name, data in keys_data(c, kill_ns).items():
                    if seen.setdefault(name, data) != data:
                        changed.add(name)
            stop.wait(0.5)

    created = [0]
    retries = [0]

    def apply_all() -> None:
        for plural, obj in objects:
            retries[0] += create_with_retry(c, kill_ns, plural, obj) - 1
            created[0] += 1
            time.sleep(random.uniform(0.2, 0.8))

    rng = random.Random(stamp)
    watcher = threading.Thread(target=watch_keys, daemon=True)
    applier = threading.Thread(target=apply_all, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    applier.start()
    kills: list[str] = []
    for _ in range(KILLS):

        def running() -> dict[str, Any] | None:
            pods = c.raw(c.core.list_namespaced_pod, OPERATOR_NAMESPACE, label_selector=OPERATOR_PODS)[
                "items"
            ]
            for p in pods:
                statuses = (p.get("status") or {}).get("containerStatuses") or []
                if (
                    not p["metadata"].get("deletionTimestamp")
                    and statuses
                    and "running" in statuses[0]["state"]
                ):
                    return p  # type: ignore[no-any-return]
            return None

        found: list[dict[str, Any]] = []

        def operator_running(found: list[dict[str, Any]] = found) -> bool:
            pod = running()
            if pod is not None:
                found.append(pod)
            return pod is not None

        if wait_until(operator_running, 180) is None:
            raise RuntimeError("no running operator pod within 180 s")
        victim = found[-1]
        time.sleep(rng.uniform(1.0, 8.0))
        name = victim["metadata"]["name"]
        now = c.raw(c.core.read_namespaced_pod, name, OPERATOR_NAMESPACE)
        pid = main_pid(victim, "mlendpoints.operator")
        os.kill(pid, signal.SIGKILL)
        state = "ready" if ready(now) else "starting"
        kills.append(f"{time.monotonic() - t0:.1f} s ({created[0]} objects created, operator {state})")
        # The kubelet would restart the container with a growing back-off (10 s, 20 s, 40 s ...): a new
        # pod instead, as after a node loss.
        kubectl.run("-n", OPERATOR_NAMESPACE, "delete", "pod", name,
                    "--grace-period=0", "--force", "--wait=false", check=False)  # fmt: skip
    applier.join(300)
    converged = wait_until(lambda: reconciled(c, kill_ns), 300, interval=2)
    after: dict[str, Any] = {}

    all_after: dict[str, Any] = {}

    def same_as_clean() -> bool:
        nonlocal after, all_after
        all_after = children(kubectl, kill_ns)
        after = without_replica_sets(all_after)
        return after == clean

    same = wait_until(same_as_clean, 120, interval=5) if converged is not None else None
    converge_s = time.monotonic() - t0
    stop.set()
    watcher.join(5)
    final_keys = keys_data(c, kill_ns)
    changed |= {n for n, d in final_keys.items() if seen.get(n, d) != d}
    missing_keys = CHURN_ENDPOINTS - len(final_keys)
    # Objects with fixed names cannot be duplicated; ReplicaSets (one per template a Deployment had) can.
    duplicates = [
        f"{d}: {n} ReplicaSets (clean run: {clean_rs.get(d, 0)})"
        for d, n in replica_sets(all_after).items()
        if n > clean_rs.get(d, 0)
    ]
    ok = same is not None and not changed and not missing_keys and not duplicates
    diff = "" if same is not None else "; differences: " + "; ".join(differences(clean, after))
    check = (
        f"{len(kills)} kills at {', '.join(kills)}; {retries[0]} creates retried (webhook down); "
        + (
            f"converged {converge_s:.0f} s after the first create, the same {len(clean)} children as "
            f"the clean run ({clean_s:.0f} s)"
            if same is not None
            else "**not the same children** as the clean run"
        )
        + f"; keys changed: {len(changed)}, missing: {missing_keys}; "
        f"ReplicaSets more than the clean run's: {len(duplicates)}"
        + (" (" + "; ".join(duplicates[:4]) + ")" if duplicates else "")
        + diff
    )  # fmt: skip
    for ns in (clean_ns, kill_ns):
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
    return Row(
        f"7. operator SIGKILLed {KILLS} times while {CHURN_ENDPOINTS} endpoints are applied",
        "—",
        "—",
        "same children as a clean run; keys unchanged; no duplicates",
        verdict(ok, check),
    )


# --- the run ---------------------------------------------------------------------------------------------
def run(tmp: Path, events: set[int]) -> str:
    load_before = os.getloadavg()
    substrate = _Substrate()
    substrate.build_images()
    if substrate.cluster is None or substrate.images is None:
        raise RuntimeError(substrate.cluster_error or substrate.images_error or "no cluster")
    kubectl = Kubectl(str(substrate.cluster.kubeconfig))
    (tmp / "mlflow").mkdir()
    stamp = int(time.time())
    with serve(tmp / "mlflow") as mlflow:
        env = {
            "MLENDPOINTS_MLFLOW_TRACKING_URI": mlflow.pod_url,
            "MLENDPOINTS_SERVING_IMAGE": substrate.images.serving,
        }
        deploy_operator(kubectl, substrate.images.operator, env)
        namespace = f"bench-reliability-{stamp}"
        kubectl.run("create", "namespace", namespace)
        cluster = Cluster(substrate.cluster.api_client, kubectl, namespace)
        try:
            return measure(cluster, kubectl, mlflow.url, events, stamp, load_before)
        finally:
            kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def measure(
    c: Cluster,
    kubectl: Kubectl,
    mlflow_url: str,
    events: set[int],
    stamp: int,
    load_before: tuple[float, float, float],
) -> str:
    kubectl.apply(endpoint_manifests(), c.ns)
    wait_for("the keys", lambda: kubectl.get("secret", "rel-keys", c.ns), 180, interval=1)
    for name in ("rel-router", "blue-server", "green-server"):
        wait_for(f"{name} rolled out", functools.partial(c.rolled_out, name), 300, interval=1)
    bench = Bench(c, kubectl, mlflow_url)
    if not bench.probe_all(lambda r: r.outcome == "ok", timeout=120):
        raise RuntimeError("the endpoint does not answer steadily")
    # What each version answers, from the cluster itself: blue serves v1, green v2 (pinned requests).
    predictions = {"v1": bench.pinned_value("blue"), "v2": bench.pinned_value("green")}
    if predictions["v1"] == predictions["v2"]:
        raise RuntimeError(f"v1 and v2 answer the same: {predictions}")
    bench.predictions = predictions
    rows: dict[int, Row] = {}
    plan: list[tuple[int, str, Callable[[], Row]]] = [
        (1, "1. model v1 -> v2 (rolling update, 2 replicas)", bench.rolling_update),
        (2, "2. `@champion` moves v1 -> v2 (modelRefreshInterval 10 s)", bench.alias_moves),
        (3, "3. a model-server pod deleted (graceful), 2 replicas",
         lambda: bench.delete_pod("blue-server", "3. a model-server pod deleted (graceful), 2 replicas")),
        (4, "4. a router pod deleted (graceful), 2 router replicas",
         lambda: bench.delete_pod("rel-router", "4. a router pod deleted (graceful), 2 router replicas")),
        (5, "5. a model-server pod's process SIGKILLed", bench.sigkill_server),
        (6, "6. kube-apiserver stopped, then started; then a traffic edit", bench.apiserver_down),
        (8, "8. a mirrored deployment crash-looping", bench.mirror_crashloop),
        (7, "7. operator SIGKILLed while endpoints are applied", lambda: operator_kills(c, kubectl, stamp)),
    ]  # fmt: skip
    for number, label, event in plan:
        if number not in events:
            continue
        started = time.monotonic()
        print(f"event {number}: {label}", flush=True)
        try:
            row = event()
        except Exception as exc:  # one event's failure is reported, the others still run
            row = Row(label, "—", "—", "", f"**not measured**: {type(exc).__name__}: {exc}"[:600])
        row.load = f"{os.getloadavg()[0]:.1f}"
        print(f"  {row.verdict} ({time.monotonic() - started:.0f} s)", flush=True)
        rows[number] = row
        if number == 6:  # the live traffic back on blue (2 replicas) for what follows
            with contextlib.suppress(Exception):
                c.patch("onlineendpoint", "rel", {"spec": {"traffic": {"blue": 100, "green": 0}}})
                bench.probe_all(lambda r: r.served_by == "blue")
    body_rows: list[list[object]] = [
        [r.event, r.requests, r.failed, r.target, r.verdict, r.load] for _, r in sorted(rows.items())
    ]
    return (
        "The local cluster (one node, 2 cores shared by the control plane, the pods, MLflow and the load "
        f"generator); the operator from its image; endpoint `rel` with 2 router pods, deployment `blue` "
        f"(2 model-server pods, 1 worker each) and `green` (1 pod, weight 0). Load: {RATE:.0f} requests/s "
        f"paced over {CONNECTIONS} keep-alive connections from this machine to the Service's ClusterIP, one "
        f"diabetes row each, {TIMEOUT_S:.0f} s timeout; {BEFORE_S:.0f} s of load before each event and "
        f"{AFTER_S:.0f} s after it settled. A connection the server has closed while idle is not reused (as "
        "HTTP clients check before reusing one); anything else that does not end in a 200 is a failure: "
        "HTTP status, refused, reset, closed without an answer, timeout. The model version is told by the "
        f"prediction (v1 answers {predictions['v1']:.3f}, v2 {predictions['v2']:.3f}).\n\n"
        + table(["event", "requests", "failed (by class)", "target", "verdict", "load (1 min)"], body_rows)
        + f"\n\nLoad average (1, 5, 15 min): {' / '.join(f'{x:.1f}' for x in load_before)} at the start, "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end; the last column is the 1-minute "
        "average when each event ended.\n\n"
        f"Event 7: {CHURN_ENDPOINTS} endpoints with one deployment each, created one by one 0.2-0.8 s apart "
        "(a create refused while the operator, hence its admission webhook, is down is retried) in a "
        "namespace with a ResourceQuota of 0 pods; each kill is a SIGKILL of the operator's process on this "
        "host at a random moment 1-8 s after its container started, followed by a forced delete of the pod, "
        "so that a new pod starts at once rather than after the kubelet's crash back-off (10 s, 20 s, "
        "40 s ...). The children are compared with a clean run of the same objects in another namespace: "
        "kinds, names, labels, annotations, specs, data (the keys' names only), owners by kind and name; not "
        "uids, cluster IPs, key values or the config-hash annotation (it hashes the owner's uid). The keys "
        "Secrets are read every 0.5 s while it runs: a changed value counts.\n\n" + DRAIN
    )


DRAIN = (
    "**Graceful drain, as rendered** (render/common.py): every model-server and router container has a "
    "preStop hook that is the kubelet's own `sleep` (5 s, the operator setting `prestop_seconds`): the "
    "terminating pod keeps serving while its removal from the EndpointSlices reaches kube-proxy and the "
    "routers. Then SIGTERM: the model server's supervisor forwards it to its uvicorn workers, which stop "
    "accepting, close idle keep-alive connections, answer in-flight requests with `connection: close` and"
    " exit; the router stops listening, waits (up to 10 s) until no request is in flight or held, flushes"
    " collected records (up to 15 s) and exits. terminationGracePeriodSeconds = preStop + the longest "
    "request + a 5 s margin: for a model server 5 + ⌈requestTimeoutMs/1000⌉ + 5 (15 s at the default "
    "5,000 ms), for a router 5 + 60 + 15 + 5 = 85 s (fixed, so that adding a deployment does not roll the"
    " routers). Rolling updates use maxUnavailable 0 (maxSurge 25% for servers, 1 for routers). Between "
    "the router and the servers, a request whose connection to a pod was refused, or whose reused "
    "connection closed or reset before any answer, is sent again to another pod (at most 2 retries)."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.reliability")
    parser.add_argument("--events", default="1,2,3,4,5,6,7,8", help="which events, e.g. 1,3 (a partial run "
                        "does not write docs/benchmarks.md)")  # fmt: skip
    args, _ = parser.parse_known_args(argv)  # make bench (bench/run_all.py) passes its own arguments
    events = {int(e) for e in args.events.split(",") if e.strip()}
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp:
        body = run(Path(tmp), events)
    if events == set(range(1, 9)):
        write_section(
            "reliability",
            "Reliability under load (local cluster)",
            "flock /tmp/mlendpoints-cluster.lock flock -o /tmp/mlendpoints-bench.lock "
            ".venv/bin/python -m bench.reliability",
            body,
        )
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
