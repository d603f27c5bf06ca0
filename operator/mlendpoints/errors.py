"""The package's error types, and every error as one clear line plus a hint, never a bare traceback.

At the bottom of the control plane: the CLI, `local/` and the MLflow plugin all raise
`UserError` and describe any other error with `explain`; the CLI prints them as
`error: ...` / `hint: ...`, the plugin as an MlflowException.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError


class UserError(Exception):
    """An error the user can fix; `hint` says how."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _validation_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{field}: {err['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _api_line(exc: Any) -> tuple[str, str | None]:
    reason = exc.reason or ""
    try:
        body = json.loads(exc.body or "{}")
        reason = body.get("message") or reason
    except (ValueError, TypeError):
        pass
    hints = {
        401: "your credentials were refused: check the kubeconfig user (kubectl auth whoami)",
        403: "your user lacks RBAC permission for this; ask for access to the mlendpoints.io resources",
        404: "check the name and the namespace (-n); `mlendpoints status` lists what exists",
        409: "the resource changed meanwhile; run the command again",
        422: "fix the field named above and apply again",
    }
    return f"Kubernetes API: {exc.status} {reason}".strip(), hints.get(exc.status or 0)


def explain(exc: BaseException) -> tuple[str, str | None]:
    """One line and a hint for any error a command may raise (shown without traceback)."""
    # Imported here: the Kubernetes client takes a noticeable time to import, and only errors need it.
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    if isinstance(exc, UserError):
        return exc.message, exc.hint
    if isinstance(exc, ValidationError):
        return _validation_line(exc), "fix the field named above"
    if isinstance(exc, ApiException):
        return _api_line(exc)
    if isinstance(exc, ConfigException):
        return f"no Kubernetes configuration: {exc}", "set KUBECONFIG or pass --kubeconfig/--context"
    if isinstance(exc, MaxRetryError):
        reason = str(exc.reason).rsplit("] ", 1)[-1].rstrip("\")'")
        where = f"{exc.pool.scheme}://{exc.pool.host}:{exc.pool.port}" if exc.pool else "the server"
        return (
            f"cannot connect to {where}: {reason}",
            "is the cluster running and reachable (kubectl get ns)?",
        )
    if isinstance(exc, NewConnectionError | ConnectionError):
        return f"cannot connect: {exc}", "is the cluster (or the local endpoint) running and reachable?"
    if isinstance(exc, yaml.YAMLError):
        return f"invalid YAML: {exc}".replace("\n", " "), "fix the YAML syntax at the position shown"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}", "check the path"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc), None
    return f"{type(exc).__name__}: {exc}", None
