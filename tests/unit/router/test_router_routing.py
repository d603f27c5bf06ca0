"""Routing decisions (pure code): split, reroute, pin, mirror, limits, p2c, EndpointSlices."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from mlendpoints_serving.contract import RouterConfig
from mlendpoints_serving.router.routing import (
    Pod,
    TrafficSplit,
    available,
    choose_endpointslice_version,
    concurrency_limit,
    over_limit,
    parse_backend,
    pick_pod,
    ready_addresses,
    resolve_pin,
    should_mirror,
)
from mlendpoints_serving.router.state import RoutingState


def test_split_follows_weights_and_never_picks_weight_zero() -> None:
    split = TrafficSplit({"blue": 90, "green": 10, "idle": 0})
    rand = random.Random(7).random
    picks = Counter(split.pick(rand, lambda _: True).deployment for _ in range(100_000))  # type: ignore[union-attr]
    assert picks["idle"] == 0
    assert abs(picks["blue"] / 100_000 - 0.90) < 0.005
    assert abs(picks["green"] / 100_000 - 0.10) < 0.005


def test_share_of_a_deployment_without_ready_pods_moves_to_the_others_and_says_so() -> None:
    split = TrafficSplit({"a": 50, "b": 30, "c": 20})
    rand = random.Random(3).random
    picks = [split.pick(rand, lambda name: name != "a") for _ in range(50_000)]
    chosen = Counter(p.deployment for p in picks if p)
    assert chosen["a"] == 0
    rerouted = [p for p in picks if p and p.rerouted_from]
    assert {p.rerouted_from for p in rerouted} == {"a"}
    assert abs(len(rerouted) / 50_000 - 0.5) < 0.01
    # b and c keep their 3:2 ratio.
    assert abs(chosen["b"] / (chosen["b"] + chosen["c"]) - 0.6) < 0.01


def test_no_ready_deployment_with_traffic_gives_none() -> None:
    assert TrafficSplit({"a": 100, "b": 0}).pick(random.random, lambda n: n == "b") is None
    assert TrafficSplit({}).pick(random.random, lambda _: True) is None


def test_pin_resolves_known_names_only() -> None:
    deployments = {"blue": object(), "green": object()}
    assert resolve_pin(" green ", deployments) == "green"
    assert resolve_pin("purple", deployments) is None


def test_mirror_share_and_pinned_requests_are_never_mirrored() -> None:
    rand = random.Random(1).random
    mirrored = sum(should_mirror(10, False, rand) for _ in range(50_000))
    assert abs(mirrored / 50_000 - 0.10) < 0.005
    assert not any(should_mirror(50, True, rand) for _ in range(1000))
    assert not any(should_mirror(0, False, rand) for _ in range(1000))


def test_limit_is_twice_max_concurrency_times_ready_pods() -> None:
    assert concurrency_limit(4, 3) == 24
    assert not over_limit(23, 4, 3)
    assert over_limit(24, 4, 3)
    assert over_limit(0, 4, 0)


def test_p2c_prefers_the_pod_with_fewer_outstanding_requests() -> None:
    busy, idle = Pod("10.0.0.1", 1), Pod("10.0.0.2", 1)
    busy.outstanding = 5
    rand = random.Random(0).random
    assert all(pick_pod([busy, idle], rand) is idle for _ in range(100))
    # With many pods the busiest one is picked only when both draws land on it, which p2c prevents.
    pods = [Pod(f"10.0.0.{i}", 1) for i in range(10)]
    pods[0].outstanding = 100
    assert pods[0] not in {pick_pod(pods, rand) for _ in range(2000)}
    assert pick_pod([busy], rand) is busy
    assert pick_pod([], rand) is None
    assert pick_pod([busy, idle], rand, exclude=[idle]) is busy
    assert pick_pod([busy], rand, exclude=[busy]) is None


def test_p2c_spreads_evenly_when_idle() -> None:
    pods = [Pod(f"10.0.0.{i}", 1) for i in range(4)]
    rand = random.Random(5).random
    counts = Counter(pick_pod(pods, rand).host for _ in range(40_000))  # type: ignore[union-attr]
    assert all(abs(c / 40_000 - 0.25) < 0.01 for c in counts.values())


def test_ejected_pods_are_not_available_until_their_time_passes() -> None:
    pod, other = Pod("a", 1), Pod("b", 1)
    pod.ejected_until = 10.0
    assert available([pod, other], now=5.0) == [other]
    assert available([pod, other], now=10.0) == [pod, other]


def test_backend_addresses_parse_or_fail_clearly() -> None:
    assert parse_backend("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_backend("[::1]:80") == ("::1", 80)
    for bad in ("localhost", ":80", "host:http", "host:70000"):
        with pytest.raises(ValueError, match="expected 'host:port'"):
            parse_backend(bad)


@pytest.mark.parametrize(
    ("served", "expected"),
    [(["v1", "v1beta1"], "v1"), (["v1"], "v1"), (["v1beta1"], "v1beta1")],
)
def test_endpointslice_version_by_discovery(served: list[str], expected: str) -> None:
    assert choose_endpointslice_version(served) == expected


def test_endpointslice_version_missing_is_an_error() -> None:
    with pytest.raises(LookupError, match="no EndpointSlice version"):
        choose_endpointslice_version(["v2alpha1"])


def test_ready_addresses_from_slices() -> None:
    slices: list[dict[str, Any]] = [
        {
            "ports": [{"name": "http", "port": 9000}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.3"]},  # no condition: ready
                {"addresses": ["10.0.0.4"], "conditions": {"ready": True, "terminating": True}},
            ],
        },
        {"ports": [{"port": 7000}, {"port": 5001}], "endpoints": [{"addresses": ["10.0.1.1"]}]},
        {"endpoints": [{"addresses": ["10.0.2.1"]}]},
    ]
    assert ready_addresses(slices, 5001) == [
        ("10.0.0.1", 9000),
        ("10.0.0.3", 9000),
        ("10.0.1.1", 5001),
        ("10.0.2.1", 5001),
    ]


def config(**overrides: object) -> RouterConfig:
    base: dict[str, object] = {
        "endpoint": "e",
        "deployments": {"blue": {"backends": ["127.0.0.1:1"]}, "green": {"backends": ["127.0.0.1:2"]}},
        "traffic": {"blue": 100},
    }
    return RouterConfig.model_validate({**base, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"traffic": {"blue": 90}}, "sum to 0 or 100"),
        ({"traffic": {"purple": 100}}, "traffic.purple: no such deployment"),
        ({"mirrorTraffic": {"green": 51}}, "mirrorTraffic.green: share must be <= 50"),
        ({"mirrorTraffic": {"blue": 10}}, "cannot take live and mirror traffic"),
        ({"traffic": {"blue": 110, "green": -10}}, "share must be >= 0"),
    ],
)
def test_config_rules_are_enforced_with_the_field_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**overrides)


def test_state_update_keeps_counters_of_what_stays() -> None:
    state = RoutingState(config())
    blue = state.deployments["blue"]
    pod = blue.pods[0]
    blue.in_flight, pod.outstanding = 3, 2
    state.apply_config(
        config(
            deployments={"blue": {"backends": ["127.0.0.1:1", "127.0.0.1:3"]}, "green": {"backends": []}},
            traffic={"blue": 50, "green": 50},
        )
    )
    assert state.deployments["blue"] is blue and blue.in_flight == 3
    assert blue.pods[0] is pod and pod.outstanding == 2
    assert [p.address for p in blue.pods] == [("127.0.0.1", 1), ("127.0.0.1", 3)]
    assert state.deployments["green"].pods == []


def test_state_takes_pods_from_endpointslices_of_the_service() -> None:
    state = RoutingState(config(deployments={"blue": {"service": "e-blue", "port": 5001}}))
    assert state.deployments["blue"].pods == []
    state.set_service_slices({"e-blue": [{"endpoints": [{"addresses": ["10.1.0.5"]}]}], "other": []})
    assert [p.address for p in state.deployments["blue"].pods] == [("10.1.0.5", 5001)]
