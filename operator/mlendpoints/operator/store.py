"""The latest bodies of the watched custom resources, by kind: one store for the whole operator.

Fed by kopf's index and watch handlers (online.register, batch.register), read by the
reconcilers and the admission webhook. Bodies are deep copies: kopf reuses its objects.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Object = dict[str, Any]
Name = tuple[str, str]  # (namespace, name)


@dataclass
class Store:
    _bodies: dict[str, dict[Name, Object]] = field(default_factory=dict)

    def of(self, kind: str) -> dict[Name, Object]:
        """Every stored body of `kind` by (namespace, name); the live dict, changed by put/drop."""
        return self._bodies.setdefault(kind, {})

    def get(self, kind: str, namespace: str, name: str) -> Object | None:
        return self.of(kind).get((namespace, name))

    def put(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> Object | None:
        """Store a copy of `body`; the body it replaces, if any."""
        bodies = self.of(kind)
        previous = bodies.get((namespace, name))
        bodies[(namespace, name)] = copy.deepcopy(dict(body))
        return previous

    def drop(self, kind: str, namespace: str, name: str) -> None:
        self.of(kind).pop((namespace, name), None)

    def attached_to(self, kind: str, namespace: str, endpoint: str | None) -> dict[str, Object]:
        """The bodies of `kind` in `namespace` whose spec.endpointName is `endpoint`, by name."""
        return {
            name: body
            for (ns, name), body in self.of(kind).items()
            if ns == namespace and body.get("spec", {}).get("endpointName") == endpoint
        }
