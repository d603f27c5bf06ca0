"""Status aggregation, pure: observed children -> the resources' status.

Deterministic for an unchanged world (a condition keeps its lastTransitionTime
while its status stays the same), so reconciling an unchanged resource writes
no status either. The one clock is `utcnow()`, passed in as `now`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mlendpoints.api.common import Condition
from mlendpoints.api.online import (
    DeploymentSummary,
    OnlineDeploymentSpec,
    OnlineDeploymentStatus,
    OnlineEndpointStatus,
    ProvisioningState,
)
from mlendpoints.render.deployment import ResolvedModel
from mlendpoints.render.endpoint import Routing, openapi_uri, scoring_uri
from mlendpoints_serving.contract import CollectorHealth

Object = Mapping[str, Any]
StatusT = TypeVar("StatusT", bound=BaseModel)
# Waiting reasons that mean the pod will not start by itself.
_STUCK_REASONS = {
    "CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "InvalidImageName",
    "CreateContainerError", "CreateContainerConfigError", "RunContainerError",
}  # fmt: skip


def utcnow() -> str:
    """The time stamped into conditions (lastTransitionTime) and BatchJob start/completion times."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_status(model: type[StatusT], body: Object) -> StatusT:
    """The resource's recorded status; an empty one when it has none or it does not parse (a hand edit,
    an older version's), so a reconcile starts over instead of failing."""
    try:
        return model.model_validate(body.get("status") or {})
    except ValidationError:
        return model()


def condition(
    type_: str, ok: bool, reason: str, message: str = "", generation: int | None = None
) -> Condition:
    return Condition(
        type=type_,
        status="True" if ok else "False",
        reason=reason,
        message=message or None,
        observedGeneration=generation,
    )


def merge_conditions(
    previous: Iterable[Condition], current: Iterable[Condition], now: str
) -> list[Condition]:
    """Stamp lastTransitionTime: kept while a condition's status is unchanged, `now` when it flips."""
    before = {c.type: c for c in previous}
    merged = []
    for cond in current:
        old = before.get(cond.type)
        kept = old.lastTransitionTime if old is not None and old.status == cond.status else None
        merged.append(cond.model_copy(update={"lastTransitionTime": kept or now}))
    return merged


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def pod_failure(pods: Iterable[Object]) -> str | None:
    """Why pods fail, in the container's own words (its termination message), or None when none fails.

    The serving image writes fatal errors as one line (e.g. "model load failed: No module named 'xgboost'")
    to the termination log; with FallbackToLogsOnError Kubernetes falls back to the last log lines.
    """
    for pod in pods:
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            state, last = cs.get("state") or {}, cs.get("lastState") or {}
            for terminated in (state.get("terminated"), last.get("terminated")):
                if terminated and terminated.get("exitCode", 0) != 0:
                    detail = (
                        _last_line(terminated.get("message") or "") or terminated.get("reason") or "Error"
                    )
                    return f"{cs.get('name')}: {detail} (exit code {terminated.get('exitCode')})"
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in _STUCK_REASONS:
                return f"{cs.get('name')}: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"unschedulable: {cond.get('message', cond.get('reason', ''))}"
    return None


def deployment_status(
    *,
    spec: OnlineDeploymentSpec,
    generation: int | None,
    model: ResolvedModel | None,
    resolve_error: str | None,
    validation_errors: list[str],
    workload: Object | None,
    pods: Iterable[Object],
    previous: OnlineDeploymentStatus,
    now: str,
    collector: Condition | None = None,
) -> OnlineDeploymentStatus:
    """The OnlineDeployment's status from its Deployment, its pods and the model resolution
    (and, with a dataCollector, its DataCollectorReady condition, from `collector_condition`)."""
    wl_status = (workload or {}).get("status") or {}
    replicas = int(wl_status.get("replicas") or 0)
    ready = int(wl_status.get("readyReplicas") or 0)
    updated = int(wl_status.get("updatedReplicas") or 0)
    wl_spec = (workload or {}).get("spec") or {}
    desired = int(wl_spec["replicas"]) if wl_spec.get("replicas") is not None else spec.instanceCount
    scaled_to_zero = spec.scaleSettings.type == "concurrency" and workload is not None and desired == 0
    rolled_out = workload is not None and wl_status.get("observedGeneration") == workload["metadata"].get(
        "generation"
    )
    failure = pod_failure(pods)
    conditions = []
    if model is not None:
        detail = f"{spec.model} -> version {model.version}" if model.version else model.uri
        conditions.append(condition("ModelResolved", True, "Resolved", detail, generation))
    else:
        conditions.append(condition("ModelResolved", False, "ResolveFailed", resolve_error or "", generation))
    if validation_errors:
        conditions.append(
            condition("Degraded", True, "InvalidSpec", "; ".join(validation_errors), generation)
        )
    elif failure is not None:
        conditions.append(condition("Degraded", True, "PodFailing", failure, generation))
    else:
        conditions.append(condition("Degraded", False, "AsExpected", "", generation))
    progressing = workload is not None and (not rolled_out or updated < desired or replicas > updated)
    conditions.append(
        condition(
            "Progressing",
            progressing,
            "RollingOut" if progressing else "Complete",
            f"{updated}/{desired} pods updated" if progressing else "",
            generation,
        )
    )
    healthy = model is not None and not validation_errors and not progressing
    if healthy and scaled_to_zero:
        message = "no request for a while: 0 pods; the router holds the next request and starts one"
        conditions.append(condition("Ready", True, "ScaledToZero", message, generation))
    elif healthy and ready >= desired > 0:
        conditions.append(condition("Ready", True, "Serving", f"{ready}/{desired} pods ready", generation))
    else:
        reason = "Failed" if (failure or validation_errors or model is None) else "Waiting"
        message = "; ".join(validation_errors) or failure or resolve_error or f"{ready}/{desired} pods ready"
        conditions.append(condition("Ready", False, reason, message, generation))
    if collector is not None:
        conditions.append(collector)
    return OnlineDeploymentStatus(
        replicas=replicas,
        readyReplicas=ready,
        desiredReplicas=desired if workload is not None else None,
        modelUri=model.uri if model else previous.modelUri,
        resolvedModelVersion=model.version if model else previous.resolvedModelVersion,
        conditions=merge_conditions(previous.conditions, conditions, now),
        observedGeneration=generation,
    )


COLLECTOR_REPORT_FRESH_S = 600  # a router pod's report older than this counts only when none is newer


def collector_condition(
    reports: Mapping[str, str], now: dt.datetime, generation: int | None = None
) -> Condition:
    """DataCollectorReady from the router pods' reports (the collector-status ConfigMap's data:
    pod name -> contract.CollectorHealth JSON). False, naming the pod and the error, when a recent
    report says the destination failed; True when they say it is written; Unknown before any."""
    parsed: list[tuple[str, CollectorHealth, dt.datetime]] = []
    for pod, raw in sorted(reports.items()):
        try:
            health = CollectorHealth.model_validate_json(raw)
            at = dt.datetime.fromisoformat(health.at.replace("Z", "+00:00"))
        except (ValidationError, ValueError):
            continue
        parsed.append((pod, health, at))
    if not parsed:
        return Condition(
            type="DataCollectorReady",
            status="Unknown",
            reason="NoRecordsYet",
            message="no router pod has written records yet",
            observedGeneration=generation,
        )
    fresh = [p for p in parsed if (now - p[2]).total_seconds() <= COLLECTOR_REPORT_FRESH_S]
    considered = fresh or [max(parsed, key=lambda p: p[2])]
    failing = [(pod, health) for pod, health, _ in considered if not health.ok]
    if failing:
        pod, health = failing[0]
        return condition(
            "DataCollectorReady",
            False,
            "DestinationFailed",
            f"router pod {pod}: {health.error} (records dropped: {health.dropped})",
            generation,
        )
    return condition("DataCollectorReady", True, "Writing", "records are written", generation)


def is_true(conditions: Iterable[Condition], type_: str) -> bool:
    return any(c.type == type_ and c.status == "True" for c in conditions)


def _instances(statuses: Iterable[OnlineDeploymentStatus]) -> str:
    deployments = list(statuses)
    ready = sum(d.readyReplicas for d in deployments)
    desired = sum(d.desiredReplicas if d.desiredReplicas is not None else d.replicas for d in deployments)
    return f"{ready}/{desired}"


def endpoint_status(
    *,
    name: str,
    namespace: str,
    generation: int | None,
    routing: Routing,
    deployments: Mapping[str, OnlineDeploymentStatus],
    router: Object | None,
    previous: OnlineEndpointStatus,
    deleting: bool,
    now: str,
    tls_secret: str | None = None,
) -> OnlineEndpointStatus:
    """The endpoint's status from its router, its deployments' statuses and the routing decision.

    `tls_secret`: spec.tls.secretName. The operator may not read Secrets (least RBAC), so it cannot
    tell a missing one from a slow start: while no router pod is ready, RouterReady names it."""
    router_status = (router or {}).get("status") or {}
    router_ready = int(router_status.get("readyReplicas") or 0)
    router_wanted = int(((router or {}).get("spec") or {}).get("replicas") or 0)
    router_message = f"{router_ready}/{router_wanted} router pods ready"
    if tls_secret and router_ready == 0:
        router_message += (
            f"; the router pods start only once spec.tls.secretName {tls_secret!r} exists in namespace "
            f"{namespace} (a kubernetes.io/tls Secret with tls.crt and tls.key)"
        )
    conditions = [
        condition(
            "RouterReady",
            router_ready > 0,
            "Available" if router_ready > 0 else "Waiting",
            router_message,
            generation,
        ),
        condition(
            "TrafficValid",
            not routing.errors,
            "Invalid" if routing.errors else "Valid",
            "; ".join(routing.errors),
            generation,
        ),
    ]
    live = [d for d, share in routing.traffic.items() if share > 0]
    not_ready = [d for d in live if d not in deployments or not is_true(deployments[d].conditions, "Ready")]
    failed = [d for d in live if d in deployments and is_true(deployments[d].conditions, "Degraded")]
    ready = router_ready > 0 and not routing.errors and not not_ready
    if ready:
        message = "serving " + (
            ", ".join(f"{d} {routing.traffic[d]}%" for d in live) if live else "no traffic"
        )
        conditions.append(condition("Ready", True, "Serving", message, generation))
    else:
        reasons = [*routing.errors]
        reasons += [f"deployment {d} is not ready" for d in not_ready]
        if router_ready == 0:
            reasons.append("no router pod is ready")
        conditions.append(condition("Ready", False, "NotReady", "; ".join(reasons), generation))
    state: ProvisioningState
    if deleting:
        state = "Deleting"
    elif ready:
        state = "Succeeded"
    elif routing.errors or failed:
        state = "Failed"
    elif previous.provisioningState in (None, "Creating"):
        state = "Creating"
    else:
        state = "Updating"
    return OnlineEndpointStatus(
        scoringUri=scoring_uri(name, namespace, tls=tls_secret is not None),
        openapiUri=openapi_uri(name, namespace, tls=tls_secret is not None),
        provisioningState=state,
        traffic=routing.traffic,
        mirrorTraffic=routing.mirror,
        deployments=[
            DeploymentSummary(
                name=d,
                replicas=status.replicas,
                readyReplicas=status.readyReplicas,
                desiredReplicas=status.desiredReplicas,
                modelVersion=status.resolvedModelVersion,
            )
            for d, status in sorted(deployments.items())
        ],
        instances=_instances(deployments.values()),
        conditions=merge_conditions(previous.conditions, conditions, now),
        observedGeneration=generation,
    )
