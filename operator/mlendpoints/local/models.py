"""Models on this machine: a model URI fetched into the local model cache, as a pod's init container would.

`local up` fetches through the rendered pod's `fetch-model` init container; `batch run`
has no pod, so it calls `fetch_model`, which runs the same `mlendpoints-fetch` into
the same cache (`Store.model_dir`), registry aliases pinned as the operator pins them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlendpoints.local.mapping import ContainerPlan
from mlendpoints.local.rendering import resolve_model
from mlendpoints.local.runner import run_to_completion
from mlendpoints.local.state import LocalSettings, Store
from mlendpoints_serving.contract import ENV_TERMINATION_LOG


def pin(uri: str) -> str:
    """The URI to fetch: registry aliases and /latest pinned to a version, as the operator pins them."""
    return resolve_model(uri).uri


def fetch_model(pinned_uri: str, fetch_command: str, on_wait: Callable[[Path], None] | None = None) -> Path:
    """The model directory once `fetch_command` (mlendpoints-fetch) has fetched `pinned_uri` into the cache.

    `on_wait(dest)` is called about every 0.2 s while the download runs (progress reports).
    """
    dest = Store(LocalSettings().home).model_dir(pinned_uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    termination_log = dest.with_name(f"{dest.name}.termination-log")
    plan = ContainerPlan(
        pod="batch-run",
        name="fetch-model",
        argv=[fetch_command, "--model-uri", pinned_uri, "--dest", str(dest)],
        env={ENV_TERMINATION_LOG: str(termination_log)},
        cwd=None,
        ports={},
        readiness_url=None,
        log=dest.with_name(f"{dest.name}.fetch.log"),
        termination_log=termination_log,
    )
    run_to_completion(plan, on_wait=None if on_wait is None else lambda: on_wait(dest))
    return dest
