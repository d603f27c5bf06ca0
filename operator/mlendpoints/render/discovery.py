"""Which API versions the cluster serves, chosen once from discovery and passed to every renderer.

Kubernetes 1.20 serves autoscaling/v2beta2, policy/v1beta1 and discovery.k8s.io/v1beta1;
1.24+ serve autoscaling/v2, policy/v1 and discovery.k8s.io/v1. The newest served one wins.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass


class UnsupportedCluster(Exception):
    """The cluster serves none of the versions a kind needs."""


def _pick(served: Collection[str], *preferred: str) -> str:
    for group_version in preferred:
        if group_version in served:
            return group_version
    raise UnsupportedCluster(f"the cluster serves none of {', '.join(preferred)}")


@dataclass(frozen=True)
class ApiVersions:
    autoscaling: str  # HorizontalPodAutoscaler
    policy: str  # PodDisruptionBudget
    discovery: str  # EndpointSlice
    indexed_jobs: bool  # batch/v1 Job completionMode: Indexed (1.22+ by default)

    @classmethod
    def from_discovery(cls, served: Collection[str], server_version: tuple[int, int]) -> ApiVersions:
        """`served`: group/versions from /apis (e.g. "policy/v1"); `server_version`: (major, minor)."""
        return cls(
            autoscaling=_pick(served, "autoscaling/v2", "autoscaling/v2beta2"),
            policy=_pick(served, "policy/v1", "policy/v1beta1"),
            discovery=_pick(served, "discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"),
            indexed_jobs=server_version >= (1, 22),
        )


# The two version sets the project supports, for tests and for tools that run without a cluster.
KUBERNETES_1_20 = ApiVersions.from_discovery(
    {
        "autoscaling/v1",
        "autoscaling/v2beta1",
        "autoscaling/v2beta2",
        "policy/v1beta1",
        "discovery.k8s.io/v1beta1",
    },
    (1, 20),
)
MODERN = ApiVersions.from_discovery(
    {"autoscaling/v1", "autoscaling/v2", "policy/v1", "discovery.k8s.io/v1"},
    (1, 30),
)
