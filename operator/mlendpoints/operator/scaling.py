"""The scaling decision for `scaleSettings.type: concurrency`, as a pure function of the signals.

Modelled on Knative's KPA: the load (requests in flight plus those held by the routers) is
averaged over a stable window (60 s by default) and a panic window (a tenth of it). Normally the
stable average sets the pod count, so a burst does not flap it. When the panic average reaches
`panicThresholdPercent` of what the ready pods target, panic mode scales up on the panic average
at once and never down, until a stable window has passed without such a burst.

Zero: after `scaleToZeroAfterSeconds` with no request, a deployment with `minInstances: 0` goes to
0 pods. Any request held or arriving there asks for one pod at once (activation).

No clock, no I/O: the caller feeds `Observation`s and the time; `ScalerState` is the only memory.
A new state (an operator restart) never scales down before it has seen a whole stable window, nor
to zero before `scaleToZeroAfterSeconds`, nor up from zero without a request: a restart converges
without a burst of writes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlendpoints.api.online import OnlineDeploymentSpec

_EPSILON = 1e-9  # 16.0000001 requests over a target of 8 still want 2 pods, not 3


@dataclass(frozen=True, slots=True)
class Policy:
    target: float  # requests in flight (or held) per pod
    min_instances: int
    max_instances: int
    stable_window_s: float
    panic_window_s: float
    panic_threshold: float  # a ratio: 2.0 is 200%
    zero_after_s: float

    @classmethod
    def of(cls, spec: OnlineDeploymentSpec) -> Policy:
        scale = spec.scaleSettings
        return cls(
            target=float(scale.targetConcurrency or spec.requestSettings.maxConcurrentRequestsPerInstance),
            min_instances=scale.minInstances,
            max_instances=scale.maxInstances,
            stable_window_s=float(scale.stable_window_seconds()),
            panic_window_s=float(scale.panic_window_seconds()),
            panic_threshold=scale.panicThresholdPercent / 100,
            zero_after_s=float(scale.scaleToZeroAfterSeconds),
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """One scrape of a deployment's load, summed over the endpoint's routers."""

    at: float
    concurrency: float  # mean of in flight + held since the previous scrape
    queued: int  # held now
    arrived: int  # requests that arrived since the previous scrape


@dataclass(slots=True)
class ScalerState:
    started: float  # when this state began: no scale-down before a stable window of history
    last_active: float  # the last time a request was seen (in flight, held or arriving)
    samples: deque[Observation] = field(default_factory=deque)
    panic_since: float | None = None  # the last time the panic average crossed the threshold
    panic_peak: int = 0  # the most pods wanted in this panic: never scale below it while panicking

    @classmethod
    def new(cls, now: float) -> ScalerState:
        return cls(started=now, last_active=now)


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    reason: str  # stable, panic, activate, idle, scale-to-zero, no-data, warming-up
    panic: bool
    stable_concurrency: float
    panic_concurrency: float


def _mean(samples: Iterable[Observation]) -> float:
    values = [s.concurrency for s in samples]
    return sum(values) / len(values) if values else 0.0


def pods_for(concurrency: float, target: float) -> int:
    return max(0, math.ceil(concurrency / target - _EPSILON))


def decide(
    policy: Policy, state: ScalerState, observation: Observation | None, now: float, current: int, ready: int
) -> Decision:
    """The pods the deployment should have now (`current`: the Deployment's replicas, `ready`: its
    ready pods). `observation` is None when no router could be scraped: then nothing scales down.
    Updates `state`."""
    lo, hi = policy.min_instances, policy.max_instances
    if observation is None:
        replicas = min(max(current, lo), hi)
        return Decision(replicas, "no-data", state.panic_since is not None, 0.0, 0.0)

    state.samples.append(observation)
    while state.samples and state.samples[0].at <= now - policy.stable_window_s:
        state.samples.popleft()
    busy = observation.queued > 0 or observation.arrived > 0 or observation.concurrency > 0
    if busy:
        state.last_active = now
    stable = _mean(state.samples)
    panic = _mean(s for s in state.samples if s.at > now - policy.panic_window_s)
    want_stable, want_panic = pods_for(stable, policy.target), pods_for(panic, policy.target)

    if panic >= policy.panic_threshold * policy.target * max(ready, 1):
        if state.panic_since is None:
            state.panic_peak = current
        state.panic_since = now
    elif state.panic_since is not None and now - state.panic_since >= policy.stable_window_s:
        state.panic_since, state.panic_peak = None, 0

    if state.panic_since is not None:
        wanted = max(want_panic, want_stable, state.panic_peak)
        state.panic_peak = wanted
        reason = "panic"
    else:
        wanted, reason = want_stable, "stable"
        if wanted < current and now - state.started < policy.stable_window_s:
            wanted, reason = current, "warming-up"  # too little history to scale down on

    if busy and current == 0:
        wanted, reason = max(wanted, 1), "activate"
    elif busy and wanted == 0:
        wanted = 1
    elif wanted == 0:
        idle_for = now - state.last_active
        if current == 0:
            reason = "idle"  # stays at zero: nothing asked for a pod
        elif lo == 0 and idle_for >= policy.zero_after_s:
            reason = "scale-to-zero"
        else:
            wanted = 1  # idle, but not for long enough yet (or minInstances forbids zero)
    replicas = min(max(wanted, lo), hi)
    return Decision(replicas, reason, state.panic_since is not None, stable, panic)
