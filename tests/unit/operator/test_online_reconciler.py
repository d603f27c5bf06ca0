"""The online reconciler over time: pins that survive a restart, the modelRefreshInterval refresh, and a
registry that is down. Against the in-memory API server (`MemoryKube`, the one fake) and a real MLflow
model registry (sqlite), or an address where no registry listens."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mlendpoints.api.common import GROUP_VERSION
from mlendpoints.operator.fake_kube import MemoryKube
from mlendpoints.operator.online import DEPLOYMENT, ENDPOINT, Reconciler
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.operator.store import Store
from mlendpoints.render.common import server_name
from mlendpoints.render.discovery import MODERN
from tests.fixtures.servers import free_port

NAMESPACE = "ml"
REFRESH_S = 60


class ManualClock:
    """time.monotonic for the reconciler, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow registry: a sqlite tracking store the operator's resolver talks to."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry')}/mlflow.db"


def register(registry: str, name: str, versions: int, champion: int) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    client.create_registered_model(name)
    for version in range(1, versions + 1):
        client.create_model_version(name, source=f"/models/{name}/{version}")
    client.set_registered_model_alias(name, "champion", str(champion))


def move_champion(registry: str, name: str, version: int) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=registry, registry_uri=registry).set_registered_model_alias(
        name, "champion", str(version)
    )


class Cluster:
    """The fake API server, the operator's store as the watch would feed it, and one reconciler."""

    def __init__(self, tracking_uri: str) -> None:
        self.kube = MemoryKube()
        self.clock = ManualClock()
        self.tracking_uri = tracking_uri
        self.reconciler = self.start_operator()

    def start_operator(self) -> Reconciler:
        """A fresh operator process: empty memory, a store filled by the initial listing."""
        store = Store()
        for (kind, ns, name), body in self.kube.objects.items():
            if kind in (ENDPOINT, DEPLOYMENT):
                store.put(kind, ns, name, body)
        settings = OperatorSettings(mlflow_tracking_uri=self.tracking_uri, standalone=True)
        self.reconciler = Reconciler(self.kube, settings, MODERN, store, clock=self.clock)
        return self.reconciler

    def add(self, kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> None:
        body = {"apiVersion": GROUP_VERSION, "kind": kind,
                "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}  # fmt: skip
        if status is not None:
            body["status"] = status
        self.reconciler.store.put(kind, NAMESPACE, name, self.kube.put(body))

    def reconcile(self, kind: str, name: str) -> None:
        asyncio.run(self.reconciler.reconcile((kind, NAMESPACE, name)))
        # The watch brings the written status back into the store.
        self.reconciler.store.put(kind, NAMESPACE, name, self.kube.peek(kind, NAMESPACE, name) or {})

    def fetched_model(self, deployment: str) -> str | None:
        """The model URI the deployment's pods fetch (its init container's --model-uri)."""
        workload = self.kube.peek("Deployment", NAMESPACE, server_name(deployment))
        if workload is None:
            return None
        args = workload["spec"]["template"]["spec"]["initContainers"][0]["args"]
        return str(args[args.index("--model-uri") + 1])

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return dict((self.kube.peek(kind, NAMESPACE, name) or {}).get("status") or {})

    def condition(self, kind: str, name: str, type_: str) -> tuple[str, str, str]:
        cond = next(c for c in self.status(kind, name)["conditions"] if c["type"] == type_)
        return cond["status"], cond["reason"], cond.get("message", "")


def test_a_restarted_operator_keeps_the_pinned_version_and_writes_nothing(registry: str) -> None:
    register(registry, "restart-model", versions=2, champion=1)
    cluster = Cluster(registry)
    cluster.add(ENDPOINT, "diabetes", {"traffic": {"blue": 100}})
    cluster.add(DEPLOYMENT, "blue", {"endpointName": "diabetes", "model": "models:/restart-model@champion"})
    cluster.reconcile(DEPLOYMENT, "blue")
    cluster.reconcile(ENDPOINT, "diabetes")
    cluster.reconcile(DEPLOYMENT, "blue")  # adopted by its endpoint by now
    assert cluster.fetched_model("blue") == "models:/restart-model/1"
    assert cluster.status(DEPLOYMENT, "blue")["resolvedModelVersion"] == "1"

    move_champion(registry, "restart-model", 2)  # while no operator runs
    cluster.start_operator()
    writes = len(cluster.kube.writes)
    cluster.reconcile(DEPLOYMENT, "blue")
    cluster.reconcile(ENDPOINT, "diabetes")

    # The pods run version 1 and the spec did not change: the alias is not followed without a refresh.
    assert cluster.fetched_model("blue") == "models:/restart-model/1"
    assert cluster.status(DEPLOYMENT, "blue")["resolvedModelVersion"] == "1"
    assert cluster.kube.writes[writes:] == []


def test_model_refresh_interval_follows_the_alias_once_due(registry: str) -> None:
    register(registry, "refresh-model", versions=2, champion=1)
    cluster = Cluster(registry)
    spec = {
        "endpointName": "diabetes",
        "model": "models:/refresh-model@champion",
        "modelRefreshInterval": REFRESH_S,
    }
    cluster.add(DEPLOYMENT, "blue", spec)
    cluster.reconcile(DEPLOYMENT, "blue")
    assert cluster.fetched_model("blue") == "models:/refresh-model/1"

    move_champion(registry, "refresh-model", 2)
    cluster.clock.now += REFRESH_S - 1
    cluster.reconcile(DEPLOYMENT, "blue")
    assert cluster.fetched_model("blue") == "models:/refresh-model/1", "not due yet"

    cluster.clock.now += 1
    cluster.reconcile(DEPLOYMENT, "blue")
    assert cluster.fetched_model("blue") == "models:/refresh-model/2"
    status = cluster.status(DEPLOYMENT, "blue")
    assert (status["modelUri"], status["resolvedModelVersion"]) == ("models:/refresh-model/2", "2")
    assert cluster.condition(DEPLOYMENT, "blue", "ModelResolved") == (
        "True", "Resolved", "models:/refresh-model@champion -> version 2",
    )  # fmt: skip

    # After a restart the interval runs from the restart, with the recorded version pinned meanwhile.
    cluster.start_operator()
    move_champion(registry, "refresh-model", 1)
    cluster.reconcile(DEPLOYMENT, "blue")
    cluster.clock.now += REFRESH_S - 1
    cluster.reconcile(DEPLOYMENT, "blue")
    assert cluster.fetched_model("blue") == "models:/refresh-model/2"
    cluster.clock.now += 1
    cluster.reconcile(DEPLOYMENT, "blue")
    assert cluster.fetched_model("blue") == "models:/refresh-model/1"


def test_a_registry_that_is_down_keeps_the_served_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, not after MLflow's backoff
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cluster = Cluster(down)
    spec = {
        "endpointName": "diabetes",
        "model": "models:/diabetes@champion",
        "modelRefreshInterval": REFRESH_S,
    }
    # What the previous operator recorded for this generation of the spec: the pods run version 3.
    resolved = {
        "type": "ModelResolved",
        "status": "True",
        "reason": "Resolved",
        "message": "models:/diabetes@champion -> version 3",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    recorded = {"modelUri": "models:/diabetes/3", "resolvedModelVersion": "3", "observedGeneration": 1,
                "conditions": [resolved]}  # fmt: skip
    cluster.add(DEPLOYMENT, "blue", spec, status=recorded)
    cluster.add(DEPLOYMENT, "green", {"endpointName": "diabetes", "model": "models:/diabetes@champion"})

    cluster.reconcile(DEPLOYMENT, "blue")
    assert cluster.fetched_model("blue") == "models:/diabetes/3"
    cluster.clock.now += REFRESH_S  # the refresh is due, and fails
    with caplog.at_level(logging.WARNING, logger="mlendpoints.operator"):
        cluster.reconcile(DEPLOYMENT, "blue")
    assert "refreshing models:/diabetes@champion failed, still serving version 3: " in caplog.text
    assert down in caplog.text
    assert cluster.fetched_model("blue") == "models:/diabetes/3"
    assert cluster.status(DEPLOYMENT, "blue")["resolvedModelVersion"] == "3"
    assert cluster.condition(DEPLOYMENT, "blue", "ModelResolved")[0] == "True"

    # A deployment that never resolved has nothing to serve: no pods, and the status says why.
    cluster.reconcile(DEPLOYMENT, "green")
    assert cluster.fetched_model("green") is None
    resolved, reason, message = cluster.condition(DEPLOYMENT, "green", "ModelResolved")
    assert (resolved, reason) == ("False", "ResolveFailed")
    assert message.startswith("models:/diabetes@champion: ") and down in message


def test_the_fake_records_every_write_and_applies_status_as_merge_patches() -> None:
    # MemoryKube is test code that other tests rely on: its own behaviour is checked here.
    from mlendpoints.operator.kube import Ref

    kube = MemoryKube()
    ref = Ref(GROUP_VERSION, DEPLOYMENT, NAMESPACE, "blue")
    meta = {"name": "blue", "namespace": NAMESPACE}
    kube.put({"apiVersion": GROUP_VERSION, "kind": DEPLOYMENT, "metadata": meta,
              "spec": {"model": "a"}, "status": {"phase": "x", "old": 1}})  # fmt: skip
    asyncio.run(kube.patch_status(ref, {"phase": "y"}, current={"phase": "x", "old": 1}))
    assert kube.peek(DEPLOYMENT, NAMESPACE, "blue")["status"] == {"phase": "y"}  # type: ignore[index]
    asyncio.run(kube.apply({"apiVersion": GROUP_VERSION, "kind": DEPLOYMENT, "metadata": meta,
                            "spec": {"model": "b"}}))  # fmt: skip
    live = kube.peek(DEPLOYMENT, NAMESPACE, "blue")
    assert live is not None and live["spec"] == {"model": "b"} and live["metadata"]["generation"] == 2
    assert [verb for verb, _ in kube.writes] == ["patch_status", "apply"]
