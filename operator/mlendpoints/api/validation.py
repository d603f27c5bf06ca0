"""Rules a structural schema cannot express, as pure functions.

Each returns a list of errors, each naming the field and the rule
(`spec.traffic: percentages sum to 110, must be 0 or 100`). The admission
webhook rejects with them; without the webhook the reconciler runs the same
checks and reports them in a condition, so nothing invalid is ever routed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mlendpoints.api import uris
from mlendpoints.api.common import DNS_LABEL, NAME_MAX
from mlendpoints.api.online import OnlineDeploymentSpec, OnlineEndpointSpec

M = TypeVar("M", bound=BaseModel)

_MODELS_URI = re.compile(f"^{uris.MODELS_URI}$")
_RUNS_URI = re.compile(f"^{uris.RUNS_URI}$")
_REMOTE_URI = re.compile(f"^{uris.REMOTE_URI}$")
_LOCAL_URI = re.compile(f"^{uris.LOCAL_URI}$")


def parse_model_uri(uri: str) -> tuple[str, str, str] | None:
    """models:/ URIs as (name, 'version'|'alias'|'latest', value); None for other URIs."""
    match = _MODELS_URI.match(uri)
    if not match:
        return None
    if match["alias"]:
        return match["name"], "alias", match["alias"]
    if match["version"] == "latest":
        return match["name"], "latest", "latest"
    return match["name"], "version", match["version"]


def validate_model_uri(uri: str, field: str = "spec.model") -> list[str]:
    if uri.startswith("models:"):
        if parse_model_uri(uri) is None:
            return [f"{field}: {uri!r} is not a registry URI; {uris.MODELS_URI_HINT}"]
        return []
    if uri.startswith("runs:"):
        return [] if _RUNS_URI.match(uri) else [f"{field}: {uri!r} is not a run URI; {uris.RUNS_URI_HINT}"]
    if _REMOTE_URI.match(uri) or _LOCAL_URI.match(uri):
        return []
    return [f"{field}: {uri!r} is not a model URI; {uris.ANY_URI_HINT}"]


def validate_name(name: str, field: str = "metadata.name") -> list[str]:
    if len(name) > NAME_MAX:
        return [f"{field}: {name!r} is {len(name)} characters, at most {NAME_MAX} allowed"]
    if not re.match(DNS_LABEL, name):
        return [f"{field}: {name!r} must be a DNS label (lower-case letters, digits and '-')"]
    return []


def validate_endpoint(spec: OnlineEndpointSpec, deployments: Collection[str] | None = None) -> list[str]:
    """Traffic and mirror rules; given `deployments` (names), also that the named ones exist."""
    errors = endpoint_rule_errors(spec)
    if deployments is not None:
        errors += endpoint_reference_errors(spec, deployments)
    return errors


def endpoint_rule_errors(spec: OnlineEndpointSpec) -> list[str]:
    """What the endpoint alone decides (the CRD's CEL rules say the same)."""
    errors = []
    total = sum(spec.traffic.values())
    if total not in (0, 100):
        errors.append(f"spec.traffic: percentages sum to {total}, must be 0 or 100")
    if len(spec.mirrorTraffic) > 1:
        errors.append(f"spec.mirrorTraffic: {len(spec.mirrorTraffic)} entries, at most 1 allowed")
    for name, percent in sorted(spec.mirrorTraffic.items()):
        if not 1 <= percent <= 50:
            errors.append(f"spec.mirrorTraffic.{name}: {percent}% is outside 1-50")
        if spec.traffic.get(name, 0) > 0:
            errors.append(
                f"spec.mirrorTraffic.{name}: mirrors to a deployment with "
                f"{spec.traffic[name]}% live traffic, must have 0"
            )
    return errors


def endpoint_reference_errors(spec: OnlineEndpointSpec, deployments: Collection[str]) -> list[str]:
    """Traffic and mirror entries naming no OnlineDeployment of the endpoint (needs other objects)."""
    errors = []
    for name in sorted(spec.traffic):
        if name not in deployments:
            errors.append(f"spec.traffic.{name}: no OnlineDeployment {name!r} of this endpoint")
    for name in sorted(spec.mirrorTraffic):
        if name not in deployments:
            errors.append(f"spec.mirrorTraffic.{name}: no OnlineDeployment {name!r} of this endpoint")
    return errors


def validate_deployment(name: str, spec: OnlineDeploymentSpec) -> list[str]:
    errors = validate_name(name)
    errors += validate_model_uri(spec.model)
    scale = spec.scaleSettings
    if scale.type != "default" and scale.minInstances > scale.maxInstances:
        errors.append(
            f"spec.scaleSettings: minInstances {scale.minInstances} exceeds maxInstances {scale.maxInstances}"
        )
    if scale.minInstances == 0 and scale.type != "concurrency":
        errors.append("spec.scaleSettings.minInstances: 0 (scale to zero) needs type concurrency")
    if scale.type == "targetUtilization" and "cpu" not in spec.resources.requests:
        errors.append("spec.resources.requests.cpu: required by scaleSettings.type targetUtilization")
    if not spec.modelMountPath.startswith("/"):
        errors.append(f"spec.modelMountPath: {spec.modelMountPath!r} must be an absolute path")
    collector = spec.dataCollector
    if collector is not None and any(h.lower() == "authorization" for h in collector.headers):
        errors.append("spec.dataCollector.headers: Authorization is never collected; remove it")
    return errors


def validate_deployment_delete(name: str, endpoint: OnlineEndpointSpec | None) -> list[str]:
    """A deployment may go only when no live or mirrored traffic points at it."""
    if endpoint is None:
        return []
    if endpoint.traffic.get(name, 0) > 0:
        return [
            f"spec.traffic.{name}: the endpoint sends {endpoint.traffic[name]}% of live traffic to this "
            "deployment; set it to 0 before deleting"
        ]
    if name in endpoint.mirrorTraffic:
        return [
            f"spec.mirrorTraffic.{name}: the endpoint mirrors traffic to this deployment; remove it first"
        ]
    return []


def schema_errors(exc: ValidationError, prefix: str = "spec") -> list[str]:
    """Pydantic errors as `spec.a.b: message` lines."""
    errors = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix, *err["loc"]))
        errors.append(f"{path}: {err['msg']}")
    return errors


def parse_spec(model: type[M], spec: Mapping[str, Any] | None) -> tuple[M | None, list[str]]:
    try:
        return model.model_validate(dict(spec or {})), []
    except ValidationError as exc:
        return None, schema_errors(exc)
