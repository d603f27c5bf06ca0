"""The holding queue and the load accounting of a deployment (router/state.py), without I/O."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from mlendpoints_serving.contract import DeploymentRoute, RouterConfig
from mlendpoints_serving.router import state as state_module
from mlendpoints_serving.router.routing import TrafficSplit
from mlendpoints_serving.router.state import Deployment, RoutingState

POD_A, POD_B = ("10.0.0.1", 8080), ("10.0.0.2", 8080)


def holding() -> Deployment:
    return Deployment("blue", DeploymentRoute(maxQueueWaitMs=1000, maxConcurrentRequestsPerInstance=1))


def test_held_requests_go_out_oldest_first_with_their_slot_reserved() -> None:
    async def scenario() -> None:
        deployment = holding()
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in range(3)]
        for waiter in waiters:
            deployment.hold(waiter)
        assert len(deployment.queue) == 3 and deployment.in_flight == 0
        deployment.set_addresses([POD_A])  # limit 2 x 1 x 1 pod = 2
        assert [w.done() for w in waiters] == [True, True, False]
        assert deployment.in_flight == 2 and len(deployment.queue) == 1
        deployment.finish()  # one answered: its slot goes to the third
        assert waiters[2].result() is True and deployment.in_flight == 2 and not deployment.queue

    asyncio.run(scenario())


def test_a_cancelled_waiter_is_skipped_and_a_leaving_one_removed() -> None:
    async def scenario() -> None:
        deployment = holding()
        loop = asyncio.get_running_loop()
        first, second, third = (loop.create_future() for _ in range(3))
        for waiter in (first, second, third):
            deployment.hold(waiter)
        first.cancel()
        deployment.leave(second)
        assert list(deployment.queue) == [first, third]
        deployment.set_addresses([POD_A])
        assert third.result() is True and deployment.in_flight == 1

    asyncio.run(scenario())


def test_all_pods_ejected_wakes_the_queue_when_the_ejection_ends() -> None:
    async def scenario() -> None:
        deployment = holding()
        deployment.set_addresses([POD_A])
        deployment.pods[0].ejected_until = time.monotonic() + 0.2
        waiter = asyncio.get_running_loop().create_future()
        deployment.hold(waiter)
        deployment.wake()
        assert not waiter.done()
        assert await asyncio.wait_for(waiter, 2) is True

    asyncio.run(scenario())


def test_release_all_when_the_deployment_leaves_the_config() -> None:
    async def scenario() -> None:
        config = RouterConfig(endpoint="e", deployments={"blue": DeploymentRoute(maxQueueWaitMs=5000)})
        state = RoutingState(config)
        waiter = asyncio.get_running_loop().create_future()
        state.deployments["blue"].hold(waiter)
        state.apply_config(RouterConfig(endpoint="e"))
        assert waiter.result() is False

    asyncio.run(scenario())


def test_concurrency_seconds_integrates_in_flight_and_held(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(state_module.time, "monotonic", lambda: clock[0])
    deployment = Deployment("blue", DeploymentRoute(autoscaled=True))
    deployment.set_addresses([POD_A])
    deployment.start(101.0)  # 0 in flight during [100, 101]
    deployment.start(102.0)  # 1 during [101, 102]
    clock[0] = 104.0
    deployment.finish()  # 2 during [102, 104]
    load = deployment.load(110.0)  # 1 during [104, 110]
    assert load.inFlight == 1 and load.queued == 0
    assert load.concurrencySeconds == pytest.approx(1 + 4 + 6)


def test_tracking_starts_from_the_config_change_not_from_the_last_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(state_module.time, "monotonic", lambda: clock[0])
    deployment = Deployment("blue", DeploymentRoute())
    assert not deployment.tracked
    deployment.in_flight = 3  # as an untracked deployment counts: no integral
    clock[0] = 50.0
    deployment.set_route(DeploymentRoute(autoscaled=True))
    assert deployment.tracked and deployment.load(52.0).concurrencySeconds == pytest.approx(6)


def test_a_holding_deployment_keeps_its_share_with_no_ready_pod() -> None:
    config = RouterConfig(
        endpoint="e",
        deployments={
            "blue": DeploymentRoute(backends=["127.0.0.1:1"]),
            "zero": DeploymentRoute(maxQueueWaitMs=100),
        },
        traffic={"blue": 70, "zero": 30},
    )
    state = RoutingState(config)
    now = time.monotonic()
    assert state.deployments["zero"].takes_traffic(now) and not state.deployments["zero"].has_ready_pod(now)
    split: TrafficSplit = state.split
    rand = random.Random(5).random
    picks: Counter[str] = Counter()
    for _ in range(10_000):
        pick = split.pick(rand, lambda n: state.deployments[n].takes_traffic(now))
        assert pick is not None and pick.rerouted_from is None
        picks[pick.deployment] += 1
    assert abs(picks["zero"] / 10_000 - 0.30) < 0.02
    # Without maxQueueWaitMs the share moves, as before.
    assert not Deployment("x", DeploymentRoute()).takes_traffic(now)
