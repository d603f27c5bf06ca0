"""The local scaler's rounds with a fake router report and no processes: what it asks for, when it
leaves things alone, and the counts `local up` starts and keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlendpoints.api.common import GROUP_VERSION
from mlendpoints.api.online import OnlineDeployment, OnlineDeploymentSpec
from mlendpoints.local.autoscale import LocalScaler
from mlendpoints.local.endpoint import _wanted
from mlendpoints.local.state import DeploymentState, EndpointState, Store
from mlendpoints.operator.scaling import Decision
from mlendpoints_serving.contract import DeploymentLoad, ScalingReport

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
