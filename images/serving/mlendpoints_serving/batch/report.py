"""Live progress for the operator: this instance's `BatchStatus`, patched into the job's progress ConfigMap.

In a cluster the operator makes a ConfigMap per BatchJob (`contract.batch_progress_configmap`)
and a ServiceAccount that may `get` and `patch` that one ConfigMap and nothing else; its token is
mounted into the driver container only. Each instance merge-patches its own key
(`contract.batch_progress_key`), so instances never overwrite each other, at most once every
`interval` seconds (and once more at the end). A report that fails is logged and retried later
with a longer pause: progress is a courtesy, never a reason to fail or slow the job.

Plain HTTPS with the standard library: the coordinator stays free of heavy imports.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from mlendpoints_serving.contract import BatchStatus, batch_progress_key

log = logging.getLogger("mlendpoints.batch")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_BACKOFF_S = 60.0


class ProgressReporter:
    def __init__(
        self,
        configmap: str,
        instance: int,
        interval: float,
        api_server: str | None = None,
        credentials: Path = SERVICE_ACCOUNT,
    ) -> None:
        self.configmap, self.instance, self.interval = configmap, instance, interval
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if api_server is None and host and port:
            api_server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        self.api_server = api_server
        self.credentials = credentials
        self._pending: str | None = None
        self._next = 0.0  # monotonic time of the next allowed report
        self._pause = interval
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.api_server is not None

    def update(self, status: BatchStatus, force: bool = False) -> None:
        """Record the latest status; send it now if due (or `force`), else at a later `flush()`."""
        if not self.enabled:
            return
        self._pending = status.model_dump_json(exclude_none=True)
        if force or time.monotonic() >= self._next:
            self.flush(force=True)

    def due_in(self) -> float | None:
        """Seconds until a held-back report is due; None when nothing waits."""
        if self._pending is None:
            return None
        return max(0.0, self._next - time.monotonic())

    def flush(self, force: bool = False) -> None:
        if self._pending is None or (not force and time.monotonic() < self._next):
            return
        body = {"data": {batch_progress_key(self.instance): self._pending}}
        try:
            self._patch(body)
        except (OSError, urllib.error.URLError) as exc:  # HTTPError is an URLError
            self._pause = min(MAX_BACKOFF_S, self._pause * 2)
            if not self._warned:
                log.warning(f"progress report to ConfigMap {self.configmap} failed (retrying): {exc}")
                self._warned = True
        else:
            self._pending, self._pause, self._warned = None, self.interval, False
        self._next = time.monotonic() + self._pause

    def _patch(self, body: Mapping[str, object]) -> None:
        namespace = (self.credentials / "namespace").read_text().strip()
        token = (self.credentials / "token").read_text().strip()  # re-read: projected tokens rotate
        https = self.api_server is not None and self.api_server.startswith("https:")
        context = ssl.create_default_context(cafile=str(self.credentials / "ca.crt")) if https else None
        request = urllib.request.Request(
            f"{self.api_server}/api/v1/namespaces/{namespace}/configmaps/{self.configmap}",
            data=json.dumps(body).encode(),
            method="PATCH",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"},
        )
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            response.read()
