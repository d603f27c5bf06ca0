"""Scaling on load (`scaleSettings.type: concurrency`): the thin, stateful side of `scaling`.

One task (`Scaler.run`, started with the operator) does a round every `interval`: for each
such OnlineDeployment it reads the load from its endpoint's routers, asks `scaling.decide`, and
sets the Deployment's replicas through the scale subresource only when they differ. (Not kopf
daemons: those put a finalizer on every resource, and nothing else here needs one.) The routers
are scraped once per interval per endpoint, however many of its deployments scale on load.

Routers: the ready router pods of each endpoint, from the operator's pod watch
(`RouterPods.update`), each asked GET contract.ROUTER_SCALING_PATH. A router that does not
answer within the timeout is left out of that round; when none answers, nothing scales down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError

from mlendpoints.api.online import OnlineDeploymentSpec
from mlendpoints.operator.kube import ApiServer, Object, Ref
from mlendpoints.operator.scaling import Decision, Observation, Policy, ScalerState, decide
from mlendpoints.render.common import server_name
from mlendpoints_serving import contract

log = logging.getLogger("mlendpoints.operator.scaler")

Fetch = Callable[[str], Awaitable[contract.ScalingReport]]  # router pod IP -> its report


@dataclass
class RouterPods:
    """The ready router pods' IPs per (namespace, endpoint), fed by the pod watch."""

    pods: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def update(self, pod: Mapping[str, Any], deleted: bool) -> None:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        endpoint = (meta.get("labels") or {}).get(contract.LABEL_ENDPOINT)
        if not endpoint:
            return
        pods = self.pods.setdefault((meta.get("namespace", ""), endpoint), {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if deleted or not ready or not status.get("podIP") or meta.get("deletionTimestamp"):
            pods.pop(meta["name"], None)
        else:
            pods[meta["name"]] = status["podIP"]

    def of(self, namespace: str, endpoint: str) -> dict[str, str]:
        return dict(self.pods.get((namespace, endpoint), {}))


@dataclass
class RouterSeen:
    instance: str
    at: float
    loads: dict[str, contract.DeploymentLoad]


def router_loads(
    previous: RouterSeen | None, report: contract.ScalingReport, at: float
) -> dict[str, tuple[float, int, int]]:
    """One router's load per deployment since its previous report: (mean concurrency, held now,
    requests arrived). A first report, or one from a restarted router, counts what is in flight
    and held now, and no arrivals."""
    out = {}
    same = previous is not None and previous.instance == report.instance and at > previous.at
    for name, load in report.deployments.items():
        before = previous.loads.get(name) if same and previous is not None else None
        if before is None or previous is None or load.concurrencySeconds < before.concurrencySeconds:
            out[name] = (float(load.inFlight + load.queued), load.queued, 0)
        else:
            mean = (load.concurrencySeconds - before.concurrencySeconds) / (at - previous.at)
            out[name] = (mean, load.queued, max(0, load.requests - before.requests))
    return out


class Scaler:
    """Scrapes the routers and scales the Deployments of `concurrency` OnlineDeployments."""

    def __init__(
        self,
        kube: ApiServer,
        routers: RouterPods,
        workloads: MutableMapping[tuple[str, str], Object],
        interval: float = 1.0,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.routers = routers
        self.workloads = workloads  # live Deployments by (namespace, name), from the watch
        self.interval = interval
        self._fetch = fetch or self._http_fetch
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._seen: dict[tuple[str, str], dict[str, RouterSeen]] = {}  # by endpoint, then router pod name
        self._rounds: dict[tuple[str, str], tuple[float, dict[str, Observation] | None]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.states: dict[tuple[str, str], ScalerState] = {}
        self.last: dict[tuple[str, str], Decision] = {}

    async def _http_fetch(self, ip: str) -> contract.ScalingReport:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.interval / 2))
        host = f"[{ip}]" if ":" in ip else ip
        # The plain admin port: scoring may be HTTPS (spec.tls), with a certificate not naming pod IPs.
        url = f"http://{host}:{contract.ROUTER_ADMIN_PORT}{contract.ROUTER_SCALING_PATH}"
        async with self._session.get(url) as resp:
            resp.raise_for_status()
            return contract.ScalingReport.model_validate_json(await resp.read())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def observe(self, namespace: str, endpoint: str) -> dict[str, Observation] | None:
        """Every deployment's load on the endpoint, summed over its routers; None when no router
        answered. Scraped at most once per interval, however many deployments ask."""
        key = (namespace, endpoint)
        async with self._locks.setdefault(key, asyncio.Lock()):
            at, observed = self._rounds.get(key, (-1e18, None))
            if self._clock() - at < self.interval * 0.9:
                return observed
            pods = self.routers.of(namespace, endpoint)
            names = list(pods)
            seen = self._seen.setdefault(key, {})
            for gone in [p for p in seen if p not in pods]:
                del seen[gone]
            reports = await asyncio.gather(*(self._fetch(pods[n]) for n in names), return_exceptions=True)
            now = self._clock()
            sums: dict[str, list[float]] = {}
            answered = 0
            for pod, report in zip(names, reports, strict=True):
                if isinstance(report, BaseException):
                    log.debug("router %s/%s: no scaling report: %s", namespace, pod, report)
                    continue
                answered += 1
                for dep, (mean, queued, arrived) in router_loads(seen.get(pod), report, now).items():
                    total = sums.setdefault(dep, [0.0, 0, 0])
                    total[0] += mean
                    total[1] += queued
                    total[2] += arrived
                seen[pod] = RouterSeen(report.instance, now, dict(report.deployments))
            observed = None
            if answered:
                observed = {
                    dep: Observation(now, mean, int(queued), int(arrived))
                    for dep, (mean, queued, arrived) in sums.items()
                }
            self._rounds[key] = (now, observed)
            return observed

    async def step(self, namespace: str, name: str, spec: OnlineDeploymentSpec) -> Decision | None:
        """One round for one deployment: observe, decide, and scale when the decision differs."""
        workload = self.workloads.get((namespace, server_name(name)))
        if workload is None:
            return None  # not created yet: the reconciler makes it
        current = int((workload.get("spec") or {}).get("replicas") or 0)
        ready = int((workload.get("status") or {}).get("readyReplicas") or 0)
        observed = await self.observe(namespace, spec.endpointName)
        now = self._clock()
        state = self.states.setdefault((namespace, name), ScalerState.new(now))
        observation = None
        if observed is not None:
            observation = observed.get(name) or Observation(now, 0.0, 0, 0)
        decision = decide(Policy.of(spec), state, observation, now, current, ready)
        self.last[(namespace, name)] = decision
        if decision.replicas != current:
            log.info(
                "OnlineDeployment %s/%s: %d -> %d pods (%s; load %.1f stable, %.1f panic)",
                namespace, name, current, decision.replicas, decision.reason,
                decision.stable_concurrency, decision.panic_concurrency,
            )  # fmt: skip
            ref = Ref("apps/v1", "Deployment", namespace, server_name(name))
            await self.kube.scale(ref, decision.replicas)
            # Until the watch brings the Deployment back, decide from what was just written.
            self.workloads[(namespace, server_name(name))] = {
                **workload,
                "spec": {**(workload.get("spec") or {}), "replicas": decision.replicas},
            }
        return decision

    async def run_once(self, bodies: Mapping[tuple[str, str], Object]) -> None:
        """One round over every OnlineDeployment scaled on load (the store's bodies, by name)."""
        wanted: list[tuple[str, str, OnlineDeploymentSpec]] = []
        for (namespace, name), body in list(bodies.items()):
            if (body.get("spec") or {}).get("scaleSettings", {}).get("type") != "concurrency":
                continue
            if body["metadata"].get("deletionTimestamp"):
                continue
            try:
                wanted.append((namespace, name, OnlineDeploymentSpec.model_validate(body["spec"])))
            except ValidationError:
                continue  # its status says why; nothing to scale on
        for key in [k for k in self.states if k not in {(ns, n) for ns, n, _ in wanted}]:
            self.states.pop(key, None)  # deleted, or no longer scaled on load
            self.last.pop(key, None)
        results = await asyncio.gather(
            *(self.step(namespace, name, spec) for namespace, name, spec in wanted), return_exceptions=True
        )
        for (namespace, name, _), result in zip(wanted, results, strict=True):
            if isinstance(result, Exception):  # the next round tries again
                log.warning("OnlineDeployment %s/%s: scaling failed: %s", namespace, name, result)

    async def run(self, bodies: Callable[[], Mapping[tuple[str, str], Object]]) -> None:
        """Scale every interval, for ever (started by the operator's startup handler)."""
        while True:
            started = self._clock()
            await self.run_once(bodies())
            await asyncio.sleep(max(0.0, self.interval - (self._clock() - started)))
