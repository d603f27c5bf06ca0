"""The live routing table: the current RouterConfig joined with the ready pods of each deployment.

Updates (a new config, a new set of pods for a Service) replace what changed in
place, on the event loop thread: a deployment that stays keeps its object, its
in-flight count and its pods' outstanding counts, so requests already under way
finish against the same counters and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from mlendpoints_serving.contract import DeploymentLoad, DeploymentRoute, RouterConfig
from mlendpoints_serving.router.routing import (
    Pod,
    TrafficSplit,
    available,
    concurrency_limit,
    parse_backend,
    ready_addresses,
)


class Deployment:
    """One deployment as the router sees it: how to reach it, what is in flight and what is held."""

    __slots__ = (
        "_since",
        "_wake_timer",
        "concurrency_seconds",
        "hold_s",
        "in_flight",
        "name",
        "pods",
        "queue",
        "requests",
        "route",
        "timeout_s",
        "tracked",
    )

    def __init__(self, name: str, route: DeploymentRoute) -> None:
        self.name = name
        self.pods: list[Pod] = []
        self.in_flight = 0
        # Held requests, oldest first: each future gets True (admitted, its slot already counted in
        # in_flight) or False (its wait is over).
        self.queue: deque[asyncio.Future[bool]] = deque()
        self.requests = 0  # arrivals (live and pinned), counted while tracked
        self.concurrency_seconds = 0.0  # integral of in_flight + len(queue), while tracked
        self._since = time.monotonic()
        self._wake_timer: asyncio.TimerHandle | None = None
        self.tracked = False
        self.set_route(route)

    def set_route(self, route: DeploymentRoute) -> None:
        self.route = route
        self.timeout_s = route.requestTimeoutMs / 1000
        self.hold_s = None if route.maxQueueWaitMs is None else route.maxQueueWaitMs / 1000
        tracked = route.autoscaled or self.hold_s is not None
        if tracked and not self.tracked:
            self._since = time.monotonic()  # the integral resumes from now, not from the last change
        self.tracked = tracked

    def set_addresses(self, addresses: Iterable[tuple[str, int]]) -> None:
        """Keep the Pod objects of addresses that stay (their outstanding counts matter to p2c)."""
        current = {pod.address: pod for pod in self.pods}
        self.pods = [current.get(address) or Pod(*address) for address in dict.fromkeys(addresses)]
        if self.queue:
            self.wake()

    def ready_pods(self, now: float) -> list[Pod]:
        return available(self.pods, now)

    def has_ready_pod(self, now: float) -> bool:
        return any(pod.ejected_until <= now for pod in self.pods)

    def takes_traffic(self, now: float) -> bool:
        """Can take its live share: a ready pod, or it holds requests until one is ready."""
        return self.hold_s is not None or any(pod.ejected_until <= now for pod in self.pods)

    # --- load accounting (only called for tracked deployments, and by the holding queue) ----------
    def _integrate(self, now: float) -> None:
        self.concurrency_seconds += (self.in_flight + len(self.queue)) * (now - self._since)
        self._since = now

    def start(self, now: float) -> None:
        """A request sent to a pod (tracked deployments; others just add 1 to in_flight)."""
        self._integrate(now)
        self.in_flight += 1

    def finish(self) -> None:
        """A request answered (tracked deployments): its slot goes to the oldest held request."""
        self._integrate(time.monotonic())
        self.in_flight -= 1
        if self.queue:
            self.wake()

    def hold(self, waiter: asyncio.Future[bool]) -> None:
        self._integrate(time.monotonic())
        self.queue.append(waiter)

    def leave(self, waiter: asyncio.Future[bool]) -> None:
        """A held request gives up (its wait is over, or it was cancelled)."""
        if waiter in self.queue:
            self._integrate(time.monotonic())
            self.queue.remove(waiter)

    def wake(self) -> None:
        """Admit held requests, oldest first, while there is room; when every pod is ejected, look
        again once the first ejection is over (nothing else would say so)."""
        queue = self.queue
        now = time.monotonic()
        ready = len(available(self.pods, now))
        limit = concurrency_limit(self.route.maxConcurrentRequestsPerInstance, ready)
        if self.in_flight < limit:
            self._integrate(now)
        while queue and self.in_flight < limit:
            waiter = queue.popleft()
            if waiter.done():  # cancelled, not yet out of the queue
                continue
            self.in_flight += 1
            waiter.set_result(True)
        if queue and not ready and self.pods and self._wake_timer is None:
            delay = min(pod.ejected_until for pod in self.pods) - now
            self._wake_timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._timer_wake)

    def _timer_wake(self) -> None:
        self._wake_timer = None
        if self.queue:
            self.wake()

    def release_all(self) -> None:
        """The deployment left the config: held requests get their answer now."""
        while self.queue:
            waiter = self.queue.popleft()
            if not waiter.done():
                waiter.set_result(False)

    def load(self, now: float) -> DeploymentLoad:
        if self.tracked:
            self._integrate(now)
        return DeploymentLoad(
            inFlight=self.in_flight,
            queued=len(self.queue),
            requests=self.requests,
            concurrencySeconds=self.concurrency_seconds,
        )


class RoutingState:
    """What every request reads: config, deployments, live split and mirror rule."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.deployments: dict[str, Deployment] = {}
        self.split = TrafficSplit({})
        self.mirror: tuple[Deployment, int] | None = None
        self.service_slices: dict[str, list[dict[str, Any]]] = {}
        self.apply_config(config)

    def apply_config(self, config: RouterConfig) -> None:
        deployments: dict[str, Deployment] = {}
        for name, route in config.deployments.items():
            deployment = self.deployments.get(name) or Deployment(name, route)
            deployment.set_route(route)
            deployments[name] = deployment
        for name, gone in self.deployments.items():
            if name not in deployments:
                gone.release_all()
        self.config = config
        self.deployments = deployments
        self._refresh_pods()
        self.split = TrafficSplit(config.traffic)
        mirrored = [(deployments[name], share) for name, share in config.mirrorTraffic.items() if share > 0]
        self.mirror = mirrored[0] if mirrored else None

    def set_service_slices(self, slices: dict[str, list[dict[str, Any]]]) -> None:
        """Cluster mode: the EndpointSlices of every Service, by Service name."""
        self.service_slices = slices
        self._refresh_pods()

    def services(self) -> set[str]:
        return {route.service for route in self.config.deployments.values() if route.service}

    def _refresh_pods(self) -> None:
        for deployment in self.deployments.values():
            route = deployment.route
            if route.service:
                deployment.set_addresses(
                    ready_addresses(self.service_slices.get(route.service, []), route.port)
                )
            else:
                deployment.set_addresses(parse_backend(backend) for backend in route.backends)
