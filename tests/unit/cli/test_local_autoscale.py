"""The local scaler's rounds with a fake router report and no processes: what it asks for, when it
leaves things alone, and the counts `local up` starts and keeps."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlendpoints.api.common import GROUP_VERSION
from mlendpoints.api.online import OnlineDeployment, OnlineDeploymentSpec
from mlendpoints.local.autoscale import LocalScaler
from mlendpoints.local.endpoint import _wanted, router_config_file, write_router_config
from mlendpoints.local.runner import Process
from mlendpoints.local.state import DeploymentState, EndpointState, Store
from mlendpoints.operator.scaling import Decision
from mlendpoints_serving.contract import DeploymentLoad, DeploymentRoute, RouterConfig, ScalingReport

SCALE = {"type": "concurrency", "minInstances": 0, "maxInstances": 3, "scaleToZeroAfterSeconds": 5}


def _spec(**scale: Any) -> OnlineDeploymentSpec:
    return OnlineDeploymentSpec.model_validate(
        {"endpointName": "e", "model": "/m", "scaleSettings": {**SCALE, **scale}}
    )


def _deployment(spec: OnlineDeploymentSpec) -> OnlineDeployment:
    return OnlineDeployment.model_validate(
        {"apiVersion": GROUP_VERSION, "kind": "OnlineDeployment", "metadata": {"name": "blue"}, "spec": spec}
    )


class Harness:
    def __init__(self, home: Path) -> None:
        self.store = Store(home)
        self.now = 1000.0
        self.report: ScalingReport | None = None
        self.scaled: list[tuple[str, Decision]] = []
        state = EndpointState(endpoint="e", port=1, keys={})
        state.deployments["blue"] = DeploymentState(
            spec_hash="h", model_uri="file:///m", scaling=_spec().model_dump(mode="json"), pod_spec={}
        )
        self.store.save(state)
        self.scaler = LocalScaler(self.store, "e", fetch=lambda port: self.report, clock=lambda: self.now)
        self.scaler.scale = lambda name, spec_hash, decision: self.scaled.append((name, decision))  # type: ignore[method-assign]

    def load(self, requests: int, queued: int, seconds: float) -> None:
        self.report = ScalingReport(
            instance="r1",
            deployments={
                "blue": DeploymentLoad(
                    inFlight=0, queued=queued, requests=requests, concurrencySeconds=seconds
                )
            },
        )


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_a_held_request_at_zero_asks_for_one_instance(harness: Harness) -> None:
    harness.load(requests=0, queued=0, seconds=0.0)
    assert harness.scaler.step()
    assert harness.scaled == []  # idle at zero: nothing asked for
    harness.now += 1
    harness.load(requests=1, queued=1, seconds=0.5)
    assert harness.scaler.step()
    [(name, decision)] = harness.scaled
    assert name == "blue" and decision.replicas == 1 and decision.reason == "activate"


def test_no_router_report_changes_nothing(harness: Harness) -> None:
    harness.report = None
    for _ in range(10):
        harness.now += 1
        assert harness.scaler.step()
    assert harness.scaled == []
    assert harness.scaler.last["blue"].reason == "no-data"


def test_the_endpoint_gone_ends_the_scaler(harness: Harness) -> None:
    harness.store.remove("e")
    assert not harness.scaler.step()


def test_up_starts_at_one_and_keeps_the_scalers_count_within_bounds() -> None:
    on_load = _deployment(_spec())
    assert _wanted(on_load, None) == 1  # new: one instance, as a new Deployment's one replica
    assert _wanted(on_load, 0) == 0  # scaled to zero stays at zero
    assert _wanted(on_load, 5) == 3  # maxInstances
    assert _wanted(_deployment(_spec(minInstances=2)), None) == 2
    assert _wanted(_deployment(_spec(minInstances=2)), 0) == 2
    fixed = _deployment(
        OnlineDeploymentSpec.model_validate({"endpointName": "e", "model": "/m", "instanceCount": 2})
    )
    assert _wanted(fixed, None) == 2 and _wanted(fixed, 7) == 2


def test_an_instance_is_routed_away_before_the_state_drops_it(harness: Harness, tmp_path: Path) -> None:
    """Scaling down rewrites the router's file, then saves the state: a reader that finds no
    instance in the state never finds the router still sending to it (the order an operator
    restart or `local ls` sees)."""
    exited = subprocess.Popen(["true"], start_new_session=True)
    exited.wait()  # a pid with nothing left behind it: stop() finds nothing to signal
    proc = Process(
        pod="blue-0", container="server", pid=exited.pid, log=str(tmp_path / "log"),
        termination_log=str(tmp_path / "term"), ports={8080: 45678}, readiness_url=None,
    )  # fmt: skip
    state = harness.store.load("e")
    assert state is not None
    dep = state.deployments["blue"]
    dep.instances = [[proc]]
    harness.store.save(state)
    config_file = router_config_file(harness.store, "e")
    write_router_config(
        config_file,
        RouterConfig(endpoint="e", deployments={"blue": DeploymentRoute(backends=["127.0.0.1:45678"])}),
    )
    seen: list[tuple[int, list[str]]] = []  # at each save: (instances saved, backends routed)
    save = harness.store.save

    def recording_save(saved: EndpointState) -> None:
        routed = RouterConfig.model_validate_json(config_file.read_text()).deployments["blue"].backends
        seen.append((len(saved.deployments["blue"].instances), list(routed)))
        save(saved)

    harness.store.save = recording_save  # type: ignore[method-assign]
    harness.scaler._remove(state, "blue", dep, 1)
    assert seen == [(0, [])]
    reloaded = harness.store.load("e")
    assert reloaded is not None and reloaded.deployments["blue"].instances == []
