"""Routing decisions as pure code: no I/O, no clock, no global random state.

Every function takes the random draw (`rand`: a zero-argument callable returning
a float in [0, 1)) and the current time it needs, so the unit tests drive them
with seeded generators and fixed clocks.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Rand = Callable[[], float]

# After a connection to a pod is refused, the pod is left out of picks this long
# (passive outlier ejection), so a dead pod costs one refused connect, not one per request.
EJECT_SECONDS = 1.0


class Pod:
    """One ready backend address, with its count of requests in flight (for least-outstanding picks)."""

    __slots__ = ("ejected_until", "host", "outstanding", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.outstanding = 0
        self.ejected_until = 0.0

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __repr__(self) -> str:
        return f"Pod({self.host}:{self.port}, outstanding={self.outstanding})"


def parse_backend(backend: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); a clear error otherwise."""
    host, sep, port = backend.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"backend {backend!r}: expected 'host:port'")
    return host.strip("[]"), int(port)


def available(pods: Iterable[Pod], now: float) -> list[Pod]:
    """The pods not ejected at `now`."""
    return [pod for pod in pods if pod.ejected_until <= now]


def pick_pod(pods: Sequence[Pod], rand: Rand, exclude: Sequence[Pod] = ()) -> Pod | None:
    """Power of two choices: two distinct random pods, the one with fewer requests outstanding wins."""
    candidates = [pod for pod in pods if pod not in exclude] if exclude else pods
    count = len(candidates)
    if count == 0:
        return None
    if count == 1:
        return candidates[0]
    first = int(rand() * count)
    second = int(rand() * (count - 1))
    if second >= first:
        second += 1
    a, b = candidates[first], candidates[second]
    return b if b.outstanding < a.outstanding else a


@dataclass(frozen=True, slots=True)
class LivePick:
    deployment: str
    rerouted_from: str | None  # the deployment whose share this was, when it had no ready pod


class TrafficSplit:
    """Live weights; picks a deployment per request, moving the share of one without ready pods."""

    __slots__ = ("_cumulative", "_names", "_total", "_weights")

    def __init__(self, traffic: Mapping[str, int]) -> None:
        weighted = [(name, weight) for name, weight in traffic.items() if weight > 0]
        self._names = [name for name, _ in weighted]
        self._weights = [weight for _, weight in weighted]
        self._cumulative = _cumulative(self._weights)
        self._total = sum(self._weights)

    def pick(self, rand: Rand, is_ready: Callable[[str], bool]) -> LivePick | None:
        """None when no deployment with traffic has a ready pod."""
        if not self._total:
            return None
        name = self._names[bisect_right(self._cumulative, rand() * self._total)]
        if is_ready(name):
            return LivePick(name, None)
        ready = [(n, w) for n, w in zip(self._names, self._weights, strict=True) if is_ready(n)]
        if not ready:
            return None
        cumulative = _cumulative([w for _, w in ready])
        chosen = ready[bisect_right(cumulative, rand() * cumulative[-1])][0]
        return LivePick(chosen, name)


def _cumulative(weights: Sequence[int]) -> list[int]:
    out, running = [], 0
    for weight in weights:
        running += weight
        out.append(running)
    return out


def resolve_pin(value: str, deployments: Mapping[str, object]) -> str | None:
    """The deployment named by a pin header, or None when no such deployment exists."""
    name = value.strip()
    return name if name in deployments else None


def should_mirror(share: int, pinned: bool, rand: Rand) -> bool:
    """Copy `share`% of live, unpinned requests."""
    return not pinned and share > 0 and rand() * 100 < share


def concurrency_limit(max_per_instance: int, ready_pods: int) -> int:
    """Requests a deployment may have in flight before new ones get 429."""
    return 2 * max_per_instance * ready_pods


def over_limit(in_flight: int, max_per_instance: int, ready_pods: int) -> bool:
    return in_flight >= concurrency_limit(max_per_instance, ready_pods)


def choose_endpointslice_version(served_versions: Iterable[str]) -> str:
    """discovery.k8s.io/v1 when the API server serves it, else v1beta1 (Kubernetes 1.20 has only that)."""
    versions = set(served_versions)
    if "v1" in versions:
        return "v1"
    if "v1beta1" in versions:
        return "v1beta1"
    raise LookupError(
        f"the API server serves no EndpointSlice version (discovery.k8s.io versions: {versions})"
    )


def ready_addresses(slices: Iterable[Mapping[str, Any]], port: int) -> list[tuple[str, int]]:
    """Ready pod addresses from EndpointSlice objects (v1 and v1beta1 have the same shape here).

    The slice's own port wins (it is the pod's target port): the one equal to `port`
    when a slice lists several, else its first; `port` when it lists none.
    An endpoint without a `ready` condition counts as ready, as the API documents.
    """
    out: set[tuple[str, int]] = set()
    for item in slices:
        ports = [p["port"] for p in item.get("ports") or [] if isinstance(p.get("port"), int)]
        slice_port = port if not ports or port in ports else ports[0]
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            out.update((str(address), slice_port) for address in endpoint.get("addresses") or [])
    return sorted(out)
