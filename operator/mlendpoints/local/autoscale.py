"""The scaler of a local endpoint: `scaleSettings.type: concurrency` with processes instead of pods.

The same signal and decision as on the cluster (`mlendpoints.operator.scaler` and `.scaling`): one
process per endpoint, started by `local up` while one of its deployments scales on load and stopped
by `local down` (it is one of the endpoint's processes in the state file). Every INTERVAL_S it:

- reads the local router's GET /-/scaling and turns the counters into one `Observation` per
  deployment (`scaler.router_loads`, as the operator does per router pod);
- asks `scaling.decide` with the deployment's instances (current) and those alive (ready);
- when the count differs, under the endpoint's lock (so `up` and `down` wait for it):
  - up: starts instances exactly as `up` does (model fetch into the shared cache, server, wait
    until ready), then adds them to the router's config file (re-read live);
  - down: removes instances from the config file, waits until the router has applied it, then
    stops them (dead instances first, then the newest).

At zero the config file lists no backend for the deployment, and the router holds its requests
(`maxQueueWaitMs`, default 30 s); the held request is in the next report (queued, arrived), the
decision is `activate`, an instance starts, and the router sends the request on once it is listed.

A start that fails is logged in the scaler's log (`local logs NAME -d scaler`) and retried after a
growing pause (RETRY_S); a crashed instance is not replaced (as with a fixed instanceCount) until the
scaler or `local up` takes the count down and up again. Run: `python -m mlendpoints.local.autoscale
ENDPOINT`, with MLENDPOINTS_LOCAL_HOME as `up` had it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from mlendpoints.api.online import OnlineDeploymentSpec
from mlendpoints.errors import UserError
from mlendpoints.local.endpoint import (
    backends,
    log_size,
    pod_objects,
    router_config_file,
    start_instances,
    wait_applied,
    write_router_config,
)
from mlendpoints.local.runner import Process, alive, stop
from mlendpoints.local.state import DeploymentState, EndpointState, LocalSettings, Store
from mlendpoints.operator.scaler import RouterSeen, router_loads
from mlendpoints.operator.scaling import Decision, Observation, Policy, ScalerState, decide
from mlendpoints_serving.contract import ROUTER_SCALING_PATH, RouterConfig, ScalingReport

log = logging.getLogger("mlendpoints.local.autoscale")

INTERVAL_S = 1.0
SCRAPE_TIMEOUT_S = 0.5
START_TIMEOUT_S = 600.0  # the readiness budget of a start, as `local up --timeout`'s default
RETRY_S = (2.0, 5.0, 10.0, 30.0, 60.0)  # pauses after consecutive failed starts


def scrape(port: int, timeout: float = SCRAPE_TIMEOUT_S) -> ScalingReport | None:
    """The local router's load report; None when it does not answer (then nothing scales down)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{ROUTER_SCALING_PATH}", timeout=timeout) as resp:
            return ScalingReport.model_validate_json(resp.read())
    except (urllib.error.URLError, OSError, ValidationError):
        return None


class Reaper:
    """Reaps the instances this process started once they exit, whoever stopped them (`up` rolling a
    deployment over, `down`): until reaped they are zombies, which `runner.alive` counts as running,
    so the stopper would wait out its whole grace period. A thread, so that it reaps while the scaler
    waits for the lock `up` holds; it waits only on those pids, never on a fetch `Popen` waits for."""

    def __init__(self, period: float = 0.2) -> None:
        self.pids: set[int] = set()
        self._lock = threading.Lock()
        self._period = period

    def add(self, pids: Iterable[int]) -> None:
        with self._lock:
            self.pids.update(pids)

    def reap(self) -> None:
        with self._lock:
            for pid in list(self.pids):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done == pid:
                    self.pids.discard(pid)

    def start(self) -> None:
        def loop() -> None:
            while True:
                self.reap()
                time.sleep(self._period)

        threading.Thread(target=loop, name="reaper", daemon=True).start()


def _index(pod: list[Process]) -> int:
    return int(pod[0].pod.rsplit("-", 1)[1])


def _pod_alive(pod: list[Process]) -> bool:
    return all(alive(p.pid) for p in pod)


class LocalScaler:
    """The scaling rounds of one local endpoint; `step` is one round (tests call it directly)."""

    def __init__(
        self,
        store: Store,
        endpoint: str,
        fetch: Callable[[int], ScalingReport | None] = scrape,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.endpoint = endpoint
        self._fetch = fetch
        self._clock = clock
        self._seen: RouterSeen | None = None
        self.states: dict[str, ScalerState] = {}
        self.last: dict[str, Decision] = {}
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self.reaper = Reaper()

    def observe(self, state: EndpointState) -> dict[str, Observation] | None:
        report = self._fetch(state.port)
        if report is None:
            return None
        now = self._clock()
        loads = router_loads(self._seen, report, now)
        self._seen = RouterSeen(report.instance, now, dict(report.deployments))
        return {
            dep: Observation(now, mean, queued, arrived) for dep, (mean, queued, arrived) in loads.items()
        }

    def step(self) -> bool:
        """One round; False once the endpoint is gone (`local down`)."""
        state = self.store.load(self.endpoint)
        if state is None:
            return False
        on_load = {name: dep for name, dep in state.deployments.items() if dep.scaling is not None}
        for name in [n for n in self.states if n not in on_load]:
            self.states.pop(name, None)
            self.last.pop(name, None)
        if not on_load:
            return True
        observed = self.observe(state)
        now = self._clock()
        for name, dep in on_load.items():
            try:
                spec = OnlineDeploymentSpec.model_validate(dep.scaling)
            except ValidationError:
                continue
            current = len(dep.instances)
            ready = sum(1 for pod in dep.instances if _pod_alive(pod))
            scaler_state = self.states.setdefault(name, ScalerState.new(now))
            observation = None
            if observed is not None:
                observation = observed.get(name) or Observation(now, 0.0, 0, 0)
            decision = decide(Policy.of(spec), scaler_state, observation, now, current, ready)
            self.last[name] = decision
            if decision.replicas != current and now >= self._retry_at.get(name, 0.0):
                self.scale(name, dep.spec_hash, decision)
        return True

    def scale(self, name: str, spec_hash: str, decision: Decision) -> None:
        """Take one deployment to `decision.replicas` instances, under the endpoint's lock."""
        with self.store.locked(self.endpoint):
            state = self.store.load(self.endpoint)
            dep = state.deployments.get(name) if state is not None else None
            if state is None or dep is None or dep.scaling is None or dep.spec_hash != spec_hash:
                return  # `up` or `down` changed it meanwhile: the next round decides again
            current, wanted = len(dep.instances), decision.replicas
            log.info(
                "%s: %d -> %d instance(s) (%s; load %.1f stable, %.1f panic)",
                name, current, wanted, decision.reason,
                decision.stable_concurrency, decision.panic_concurrency,
            )  # fmt: skip
            dep.desired, dep.scale_reason = wanted, decision.reason
            self.store.save(state)
            if wanted > current:
                self._add(state, name, dep, wanted - current)
            elif wanted < current:
                self._remove(state, name, dep, current - wanted)

    def _add(self, state: EndpointState, name: str, dep: DeploymentState, count: int) -> None:
        used = {_index(pod) for pod in dep.instances}
        free = [i for i in range(len(used) + count) if i not in used][:count]
        assert dep.pod_spec is not None
        try:
            added = start_instances(
                self.store, state.endpoint, pod_objects(state), name, dep, dep.pod_spec, free, START_TIMEOUT_S
            )
        except UserError as exc:
            failures = self._failures.get(name, 0)
            pause = RETRY_S[min(failures, len(RETRY_S) - 1)]
            self._failures[name] = failures + 1
            self._retry_at[name] = self._clock() + pause
            log.error("%s: instance failed to start, retrying in %.0fs: %s", name, pause, exc)
            return
        self.reaper.add(p.pid for pod in added for p in pod)
        self._failures.pop(name, None)
        self._retry_at.pop(name, None)
        dep.instances = dep.instances + added
        self.store.save(state)
        self._route(state, name, dep)
        log.info("%s: %d instance(s) ready and routed", name, len(dep.instances))

    def _remove(self, state: EndpointState, name: str, dep: DeploymentState, count: int) -> None:
        order = sorted(dep.instances, key=lambda pod: (_pod_alive(pod), _index(pod)))  # dead first
        retired = order[:count]
        dep.instances = [pod for pod in dep.instances if pod not in retired]
        # Routed away first, as an EndpointSlice drops a pod, then recorded: whoever reads the
        # state without an instance finds the router's file without it too (not the other way).
        self._route(state, name, dep)
        self.store.save(state)
        stop(p for pod in retired for p in pod)
        log.info("%s: %d instance(s) stopped, %d left", name, len(retired), len(dep.instances))

    def _route(self, state: EndpointState, name: str, dep: DeploymentState) -> None:
        """Rewrite this deployment's backends in the router's config file; wait until applied."""
        config_file = router_config_file(self.store, state.endpoint)
        config = RouterConfig.model_validate_json(config_file.read_text())
        route = config.deployments.get(name)
        if route is None:
            return
        router_log = Path(state.router[0].log) if state.router else None
        offset = log_size(str(router_log)) if router_log is not None else 0
        deployments = {**config.deployments, name: route.model_copy(update={"backends": backends(dep)})}
        write_router_config(config_file, config.model_copy(update={"deployments": deployments}))
        if router_log is not None and all(alive(p.pid) for p in state.router):
            try:
                wait_applied(router_log, offset)
            except UserError as exc:
                log.warning("%s: %s", name, exc)

    def run(self, interval: float = INTERVAL_S) -> None:
        self.reaper.start()
        while True:
            started = self._clock()
            try:
                if not self.step():
                    log.info("endpoint %s is gone; stopping", self.endpoint)
                    return
            except (OSError, ValidationError, UserError) as exc:  # the next round tries again
                log.warning("scaling round failed: %s", exc)
            time.sleep(max(0.0, interval - (self._clock() - started)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlendpoints.local.autoscale")
    parser.add_argument("endpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")

    def stop_on(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # an instance being started is stopped on the way out

    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGINT, stop_on)
    scaler = LocalScaler(Store(LocalSettings().home), args.endpoint)
    log.info("scaling endpoint %s on load", args.endpoint)
    with contextlib.suppress(KeyboardInterrupt):
        scaler.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
