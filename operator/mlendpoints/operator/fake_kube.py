"""An in-memory API server for unit tests of the reconcilers: the one fake in this project's tests.

The project's rule is real parts, no mocks; reconcilers are the exception this module
exists for. Their behaviour over time (a restart, a refresh interval, a registry that
goes away) needs many reconciles against a cluster whose state a test sets and reads
back directly, which the real cluster tests (e2e/) cannot do in seconds. httpx ships
`MockTransport` for the same reason.

It is deliberately small and honest about what it is not:
- objects are kept by (kind, namespace, name); `apiVersion` is stored, not converted;
- `apply` deep-merges the applied fields into the live object (maps merged, lists
  replaced); unlike server-side apply it never removes a field a previous apply set;
- `metadata.generation` moves when `spec` changes, as the API server does;
- no controllers run: a test sets what they would write with `set_status`.
`ensure`/`ensure_absent` are the real client's (`ApiServer`), so convergence and the
decision to write are the production code's. Every write is recorded in `writes`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from mlendpoints.operator.kube import ApiServer, KubeError, Object, Ref, merge_patch

_Key = tuple[str, str, str]  # (kind, namespace, name)


def _key(kind: str, namespace: str, name: str) -> _Key:
    return (kind, namespace, name)


def _merged(live: Any, applied: Any) -> Any:
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for k, v in applied.items():
            out[k] = _merged(live.get(k), v)
        return out
    return copy.deepcopy(applied)


def _merge_patched(live: Any, patch: Any) -> Any:
    """RFC 7386: maps merge, a null deletes the key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(live) if isinstance(live, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patched(out.get(k), v)
    return out


class MemoryKube(ApiServer):
    def __init__(self) -> None:
        self.objects: dict[_Key, Object] = {}
        self.writes: list[tuple[str, Ref]] = []  # (verb, object) of every write, in order
        self._uids = itertools.count(1)

    # --- what a test uses to set up and read back the cluster ------------------------------------
    def put(self, obj: Mapping[str, Any]) -> Object:
        """Store an object as if a user had created it (not a reconciler's write)."""
        meta = obj["metadata"]
        stored = self._new(copy.deepcopy(dict(obj)))
        self.objects[_key(obj["kind"], meta.get("namespace", ""), meta["name"])] = stored
        return copy.deepcopy(stored)

    def set_status(self, ref: Ref, status: Object) -> None:
        """What a controller (the Deployment controller, the kubelet) would write; not a reconciler write."""
        self.objects[_key(ref.kind, ref.namespace, ref.name)]["status"] = copy.deepcopy(status)

    def peek(self, kind: str, namespace: str, name: str) -> Object | None:
        found = self.objects.get(_key(kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    # --- ApiServer -----------------------------------------------------------------------------------
    async def get(self, ref: Ref) -> Object | None:
        return self.peek(ref.kind, ref.namespace, ref.name)

    async def list(
        self, api_version: str, kind: str, namespace: str, labels: Mapping[str, str]
    ) -> list[Object]:
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind
            and ns == namespace
            and all(obj["metadata"].get("labels", {}).get(lk) == lv for lk, lv in labels.items())
        ]

    async def create(self, obj: Object) -> Object | None:
        ref = Ref.of(obj)
        if _key(ref.kind, ref.namespace, ref.name) in self.objects:
            return None
        self.writes.append(("create", ref))
        return self.put(obj)

    async def apply(self, obj: Object) -> Object:
        ref = Ref.of(obj)
        key = _key(ref.kind, ref.namespace, ref.name)
        self.writes.append(("apply", ref))
        live = self.objects.get(key)
        if live is None:
            return self.put(obj)
        merged = _merged(live, obj)
        if merged.get("spec") != live.get("spec"):
            merged["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
        self.objects[key] = merged
        return copy.deepcopy(merged)

    async def patch_status(self, ref: Ref, desired: Object, current: Object | None = None) -> None:
        if current == desired:
            return
        self.writes.append(("patch_status", ref))
        # What the real client sends, a merge patch of the status, applied as the API server applies it.
        patch = desired if current is None else merge_patch(current, desired)
        live = self.objects[_key(ref.kind, ref.namespace, ref.name)]
        live["status"] = _merge_patched(live.get("status") or {}, patch)

    async def delete(self, ref: Ref) -> None:
        if self.objects.pop(_key(ref.kind, ref.namespace, ref.name), None) is not None:
            self.writes.append(("delete", ref))

    async def scale(self, ref: Ref, replicas: int) -> None:
        live = self.objects.get(_key(ref.kind, ref.namespace, ref.name))
        if live is None:
            raise KubeError(404, f"{ref} not found")
        self.writes.append(("scale", ref))
        live.setdefault("spec", {})["replicas"] = replicas
        live["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1

    # -----------------------------------------------------------------------------------------------
    def _new(self, obj: Object) -> Object:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("generation", 1)
        meta.setdefault("namespace", "")
        return obj
