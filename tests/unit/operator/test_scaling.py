"""The scaling decision (scaleSettings.type concurrency) as a pure function of the signals."""

from __future__ import annotations

from mlendpoints.api.online import OnlineDeploymentSpec
from mlendpoints.operator.scaling import Observation, Policy, ScalerState, decide, pods_for

POLICY = Policy(
    target=8,
    min_instances=0,
    max_instances=10,
    stable_window_s=60,
    panic_window_s=6,
    panic_threshold=2.0,
    zero_after_s=30,
)


def run(
    policy: Policy,
    loads: list[float],
    current: int,
    start: float = 0.0,
    state: ScalerState | None = None,
    arrivals: int | None = None,
    ready: int | None = None,
) -> tuple[list[int], ScalerState]:
    """Feed one observation per second; the Deployment follows each decision at once."""
    state = state or ScalerState.new(start)
    wanted = []
    for i, load in enumerate(loads):
        now = start + i + 1
        arrived = (1 if load > 0 else 0) if arrivals is None else arrivals
        observed = Observation(now, load, 0, arrived)
        decision = decide(policy, state, observed, now, current, current if ready is None else ready)
        current = decision.replicas
        wanted.append(current)
    return wanted, state


def test_pods_for_rounds_up_and_tolerates_float_noise() -> None:
    assert pods_for(0, 8) == 0
    assert pods_for(0.1, 8) == 1
    assert pods_for(8, 8) == 1
    assert pods_for(8.0000000001, 8) == 1
    assert pods_for(16.5, 8) == 3


def test_policy_defaults_follow_knative_and_the_request_limit() -> None:
    spec = OnlineDeploymentSpec.model_validate(
        {
            "endpointName": "e",
            "model": "models:/m/1",
            "scaleSettings": {"type": "concurrency", "minInstances": 0, "maxInstances": 4},
            "requestSettings": {"maxConcurrentRequestsPerInstance": 6},
        }
    )
    policy = Policy.of(spec)
    assert policy.target == 6  # no targetConcurrency: the per-pod request limit
    assert (policy.stable_window_s, policy.panic_window_s, policy.panic_threshold) == (60, 6, 2.0)
    assert (policy.min_instances, policy.max_instances, policy.zero_after_s) == (0, 4, 300)


def test_steady_load_sets_the_pod_count_by_the_stable_average() -> None:
    wanted, _ = run(POLICY, [24.0] * 70, current=3)
    assert set(wanted) == {3}


def test_a_step_up_panics_and_scales_up_within_the_panic_window() -> None:
    # 2 clients for a minute, then 64: panic mode must reach 8 pods (64 / 8) in about 6 s.
    wanted, state = run(POLICY, [2.0] * 60 + [64.0] * 10, current=1)
    assert wanted[59] == 1
    reached = next(i for i, n in enumerate(wanted) if n >= 8) - 60
    assert reached <= 6, wanted[60:]
    assert state.panic_since is not None


def test_panic_never_scales_down_until_a_stable_window_without_a_burst() -> None:
    wanted, state = run(POLICY, [2.0] * 60 + [64.0] * 10 + [2.0] * 30, current=1)
    assert min(wanted[70:]) == 8  # the burst ended, panic holds the pods
    wanted, state = run(POLICY, [2.0] * 40, current=8, start=100, state=state)
    assert state.panic_since is None
    assert wanted[-1] == 1  # a stable window after the last burst: back on the stable average


def test_scale_down_follows_the_stable_window_not_the_last_seconds() -> None:
    wanted, state = run(POLICY, [40.0] * 60, current=5)
    assert wanted[-1] == 5
    wanted, _ = run(POLICY, [8.0] * 60, current=5, start=60, state=state)
    # The stable average falls over the minute: 5 pods shrink step by step, not at once.
    assert wanted[0] == 5 and wanted[-1] == 1
    assert wanted == sorted(wanted, reverse=True)


def test_scale_to_zero_after_the_idle_time_and_not_before() -> None:
    wanted, state = run(POLICY, [8.0] * 60, current=1)
    wanted, _ = run(POLICY, [0.0] * 100, current=1, start=60, state=state)
    first_zero = wanted.index(0)
    # The stable average must reach 0 (60 s) and the idle time pass (30 s): 60 s after the last request.
    assert 59 <= first_zero <= 61, first_zero
    assert set(wanted[first_zero:]) == {0}


def test_min_instances_forbids_zero_and_max_caps_panic() -> None:
    policy = Policy(8, 2, 4, 60, 6, 2.0, 30)
    wanted, _ = run(policy, [0.0] * 200, current=3)
    assert wanted[-1] == 2
    wanted, _ = run(policy, [500.0] * 10, current=2)
    assert max(wanted) == 4


def test_a_request_held_at_zero_activates_one_pod_at_once() -> None:
    state = ScalerState.new(0.0)
    decision = decide(POLICY, state, Observation(1.0, 0.0, 0, 0), 1.0, current=0, ready=0)
    assert (decision.replicas, decision.reason) == (0, "idle")
    decision = decide(POLICY, state, Observation(2.0, 0.4, 1, 1), 2.0, current=0, ready=0)
    assert decision.replicas >= 1
    assert decision.reason in ("activate", "panic")


def test_no_router_answering_never_scales_down() -> None:
    state = ScalerState.new(0.0)
    decision = decide(POLICY, state, None, 500.0, current=3, ready=3)
    assert (decision.replicas, decision.reason) == (3, "no-data")
    policy = Policy(8, 2, 4, 60, 6, 2.0, 30)
    assert decide(policy, state, None, 501.0, current=1, ready=1).replicas == 2  # min still holds


def test_a_restarted_scaler_writes_nothing_at_first() -> None:
    # A new state (operator restart) with no load: it neither scales the 3 pods down before a
    # stable window, nor scales a zero deployment up, nor takes one to zero before the idle time.
    for current in (0, 1, 3):
        wanted, _ = run(POLICY, [0.0] * 25, current=current, start=1000.0)
        assert set(wanted) == {current}, (current, wanted)
