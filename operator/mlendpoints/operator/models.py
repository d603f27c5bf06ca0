"""Resolving registry URIs (models:/name@alias, models:/name/latest) to a pinned version, against MLflow."""

from __future__ import annotations

import asyncio

from mlendpoints.api.validation import parse_model_uri
from mlendpoints.render.deployment import ResolvedModel


class ResolveError(Exception):
    """The registry could not resolve the URI; the message says why."""


def pinned_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def _resolve_blocking(uri: str, tracking_uri: str | None) -> ResolvedModel:
    parsed = parse_model_uri(uri)
    if parsed is None:
        return ResolvedModel(uri)  # runs:/, s3://, ...: fetched as given
    name, how, value = parsed
    if how == "version":
        return ResolvedModel(uri, value)
    from mlflow import MlflowClient  # the import is heavy; only registry URIs need it
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if how == "alias":
            version = str(client.get_model_version_by_alias(name, value).version)
        else:
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ResolveError(f"{uri}: model {name!r} has no versions")
            version = str(max(int(v.version) for v in versions))
    except MlflowException as exc:
        raise ResolveError(f"{uri}: {exc.message}") from exc
    except OSError as exc:  # the registry is unreachable
        raise ResolveError(f"{uri}: {exc}") from exc
    return ResolvedModel(pinned_uri(name, version), version)


async def resolve(uri: str, tracking_uri: str | None) -> ResolvedModel:
    """Pin a registry URI to a version; other URIs pass through. Runs off the event loop."""
    return await asyncio.to_thread(_resolve_blocking, uri, tracking_uri)


def needs_registry(uri: str) -> bool:
    parsed = parse_model_uri(uri)
    return parsed is not None and parsed[1] != "version"
