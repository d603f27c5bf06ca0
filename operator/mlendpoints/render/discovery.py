"""Which API versions the cluster serves, checked once from discovery and passed to every renderer.

The supported range (1.31 to 1.37, tested on 1.31 and 1.37) serves autoscaling/v2,
policy/v1, discovery.k8s.io/v1 and Indexed Jobs; everything rendered or watched
uses them. The older beta versions (Kubernetes 1.20) are no longer rendered: a
cluster that lacks a stable version is refused at start-up, saying which.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

# The oldest minor tested; the CRDs' CEL rules (messageExpression, format()) need 1.30 or so anyway.
MIN_SERVER_VERSION = (1, 31)


class UnsupportedCluster(Exception):
    """The cluster is too old for a kind the operator renders."""


@dataclass(frozen=True)
class ApiVersions:
    autoscaling: str = "autoscaling/v2"  # HorizontalPodAutoscaler
    policy: str = "policy/v1"  # PodDisruptionBudget
    discovery: str = "discovery.k8s.io/v1"  # EndpointSlice

    @classmethod
    def from_discovery(cls, served: Collection[str], server_version: tuple[int, int]) -> ApiVersions:
        """`served`: group/versions from /apis (e.g. "policy/v1"); `server_version`: (major, minor)."""
        versions = cls()
        missing = [v for v in (versions.autoscaling, versions.policy, versions.discovery) if v not in served]
        if missing or server_version < MIN_SERVER_VERSION:
            found = f"{server_version[0]}.{server_version[1]}"
            lacking = f", which lacks {', '.join(missing)}" if missing else ""
            raise UnsupportedCluster(
                f"Kubernetes {found}{lacking}: mlendpoints needs 1.31 or newer (tested on 1.31 to 1.37)"
            )
        return versions


# What every supported cluster serves, for tests and for tools that run without a cluster.
MODERN = ApiVersions()
