"""The live routing table: the current RouterConfig joined with the ready pods of each deployment.

Updates (a new config, a new set of pods for a Service) replace what changed in
place, on the event loop thread: a deployment that stays keeps its object, its
in-flight count and its pods' outstanding counts, so requests already under way
finish against the same counters and nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mlendpoints_serving.contract import DeploymentRoute, RouterConfig
from mlendpoints_serving.router.routing import Pod, TrafficSplit, available, parse_backend, ready_addresses


class Deployment:
    """One deployment as the router sees it: how to reach it and what is in flight."""

    __slots__ = ("in_flight", "name", "pods", "route", "timeout_s")

    def __init__(self, name: str, route: DeploymentRoute) -> None:
        self.name = name
        self.route = route
        self.timeout_s = route.requestTimeoutMs / 1000
        self.pods: list[Pod] = []
        self.in_flight = 0

    def set_route(self, route: DeploymentRoute) -> None:
        self.route = route
        self.timeout_s = route.requestTimeoutMs / 1000

    def set_addresses(self, addresses: Iterable[tuple[str, int]]) -> None:
        """Keep the Pod objects of addresses that stay (their outstanding counts matter to p2c)."""
        current = {pod.address: pod for pod in self.pods}
        self.pods = [current.get(address) or Pod(*address) for address in dict.fromkeys(addresses)]

    def ready_pods(self, now: float) -> list[Pod]:
        return available(self.pods, now)

    def has_ready_pod(self, now: float) -> bool:
        return any(pod.ejected_until <= now for pod in self.pods)


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
