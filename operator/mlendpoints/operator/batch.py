"""BatchJob: start its Jobs, follow them, write its status. Level-based, as the online reconciler.

A reconcile reads the BatchJob, its endpoint and deployment (from the watch cache)
and its live Jobs and pods, then takes the one next step: create the scoring Jobs;
create the merge Job once every instance succeeded; stop the Jobs when one failed
for good. Progress comes from the driver: while an instance runs, the `BatchStatus` it
patches into the job's progress ConfigMap (a key per instance, at most every few
seconds); once it ended, its termination message (JSON status of an instance or of the
whole job, or `mlendpoints-batch failed: <Reason>: ...`). The operator never reads the
data nor needs the storage's credentials.

Wiring (in mlendpoints.operator.main), as the online reconciler's: `batch =
BatchReconciler(kube, settings, store)`, then `register(registry, batch)`.
Deleting a BatchJob deletes its Jobs and their pods through owner references; the
committed output stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from mlendpoints.api.batch import (
    BatchDeployment,
    BatchEndpoint,
    BatchJob,
    BatchJobSpec,
    BatchJobStatus,
    Counts,
    JobPhase,
)
from mlendpoints.api.common import API_GROUP, API_VERSION, GROUP_VERSION, Condition
from mlendpoints.api.kinds import BATCH_DEPLOYMENT, BATCH_ENDPOINT
from mlendpoints.api.kinds import BATCH_JOB as BATCH_JOB_KIND
from mlendpoints.api.validation import schema_errors
from mlendpoints.operator import models
from mlendpoints.operator.kube import ApiServer, Object, Ref
from mlendpoints.operator.scheduler import Key, Scheduler
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.operator.status import condition, merge_conditions, parse_status, pod_failure, utcnow
from mlendpoints.operator.store import Store
from mlendpoints.render.batch import (
    DRIVER_CONTAINER,
    LABEL_BATCH_JOB,
    LABEL_BATCH_PHASE,
    JobSettings,
    output_file_uri,
    render_merge_job,
    render_progress,
    render_score_jobs,
)
from mlendpoints_serving import contract

log = logging.getLogger("mlendpoints.operator.batch")

BATCH_JOB = BATCH_JOB_KIND.kind
# Not the driver's: the Job controller's reason when a Job's pods failed backoffLimit times.
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"


# --- reading the children, pure ---------------------------------------------------------------------
def job_outcome(job: Mapping[str, Any]) -> str | None:
    """'Complete' or 'Failed' once the Job controller decided, else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == DRIVER_CONTAINER:
            return (cs.get("state") or {}).get("terminated")
    return None


def reports(pods: Iterable[Mapping[str, Any]]) -> list[contract.BatchStatus]:
    """The JSON status each succeeded driver pod left as its termination message."""
    out = []
    for pod in pods:
        terminated = _terminated(pod)
        if not terminated or terminated.get("exitCode") != 0:
            continue
        try:
            out.append(contract.BatchStatus.model_validate_json(terminated.get("message") or ""))
        except ValidationError:
            continue
    return out


def final_failure(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of a driver pod that failed for a reason a retry cannot fix
    (`BatchFailure.final`); the message is the driver's line without its component prefix."""
    for pod in pods:
        terminated = _terminated(pod)
        if not terminated or terminated.get("exitCode") == 0:
            continue
        failure = contract.parse_failure(terminated.get("message") or "")
        if failure is not None and failure.reason.final:
            return failure.reason, failure.detail
    return None


def _phase_of(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("labels", {}).get(LABEL_BATCH_PHASE, ""))


def progress_reports(configmap: Mapping[str, Any] | None) -> list[contract.BatchStatus]:
    """What the running instances last reported to the job's progress ConfigMap (a key each)."""
    out = []
    for key, value in ((configmap or {}).get("data") or {}).items():
        if not key.startswith(contract.BATCH_PROGRESS_KEY_PREFIX):
            continue
        try:
            out.append(contract.BatchStatus.model_validate_json(value))
        except ValidationError:
            continue
    return out


def progress_text(mini_batches: Counts) -> str | None:
    """`12/40 (30%)`: mini-batches finished (succeeded or failed) of all; None before any total."""
    if not mini_batches.total:
        return None
    done = mini_batches.succeeded + mini_batches.failed
    return f"{done}/{mini_batches.total} ({100 * done // mini_batches.total}%)"


def sum_instances(reported: Iterable[contract.BatchStatus]) -> tuple[Counts, Counts]:
    """Mini-batch and item counts over the instances: the latest report of each (a running
    instance's progress report, or a finished one's termination message, which always wins)."""

    def rank(r: contract.BatchStatus) -> tuple[bool, float]:
        return r.phase != "Running", r.updatedAt or 0

    last: dict[int, contract.BatchStatus] = {}
    for r in reported:
        if r.instance is not None and (r.instance not in last or rank(r) >= rank(last[r.instance])):
            last[r.instance] = r
    mb, items = Counts(), Counts()
    for r in last.values():
        for total, part in ((mb, r.miniBatches), (items, r.items)):
            total.total += part.total
            total.succeeded += part.succeeded
            total.failed += part.failed
    return mb, items


@dataclass(frozen=True)
class Step:
    """What a reconcile found and does next."""

    phase: JobPhase
    message: str | None = None
    merge: bool = False  # create the merge Job (if not there yet)
    stop_scoring: bool = False  # no more scoring pods
    summary: contract.BatchStatus | None = None


def next_step(instances: int, score_jobs: list[Object], merge_job: Object | None, pods: list[Object]) -> Step:
    """The job's phase and the one thing to do next, from its live Jobs and pods. Pure."""
    merge_pods = [p for p in pods if _phase_of(p) == "merge"]
    score_pods = [p for p in pods if _phase_of(p) == "score"]
    if merge_job is not None:
        done = [r for r in reports(merge_pods) if r.instance is None]
        outcome = job_outcome(merge_job)
        if outcome == "Complete" and done:
            return Step("Succeeded", summary=done[-1])
        failed = final_failure(merge_pods)
        if failed or outcome == "Failed":
            message = failed[1] if failed else pod_failure(merge_pods) or "the merge Job failed"
            return Step("Failed", message)
        return Step("Running", "merging the committed parts")
    failed = final_failure(score_pods)
    if failed is None and any(job_outcome(j) == "Failed" for j in score_jobs):
        failed = (BACKOFF_LIMIT_EXCEEDED, pod_failure(score_pods) or "a scoring Job failed")
    if failed is not None:
        reason, message = failed
        # Over the error threshold, the merge still records the failed summary and errors.jsonl.
        over_threshold = reason == contract.BatchFailure.ErrorThresholdExceeded
        return Step(
            "Running" if over_threshold else "Failed",
            message,
            merge=over_threshold,
            stop_scoring=True,
        )
    if score_jobs and all(job_outcome(j) == "Complete" for j in score_jobs):
        return Step("Running", f"all {instances} instances done; merging", merge=True)
    running = any((p.get("status") or {}).get("phase") == "Running" for p in score_pods)
    return Step("Running" if running else "Pending")


# --- the reconciler ---------------------------------------------------------------------------------
def _started(jobs: int, generation: int | None) -> Condition:
    return condition("Started", True, "JobsCreated", f"{jobs} scoring Job(s)", generation)


class NotStartable(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class BatchReconciler:
    def __init__(self, kube: ApiServer, settings: OperatorSettings, store: Store) -> None:
        self.kube = kube
        self.settings = settings
        self.render_settings = settings.render_settings()
        self.store = store
        self.scheduler = Scheduler(self._reconcile, concurrency=settings.api_concurrency)

    async def _reconcile(self, key: Key) -> None:
        await self.reconcile_job(key[1], key[2])

    def trigger(self, namespace: str, name: str) -> None:
        self.scheduler.trigger((BATCH_JOB, namespace, name))

    def _target(self, job: BatchJob) -> BatchDeployment:
        namespace = job.metadata["namespace"]
        endpoint_body = self.store.get(BATCH_ENDPOINT.kind, namespace, job.spec.endpointName)
        if endpoint_body is None:
            raise NotStartable("EndpointNotFound", f"BatchEndpoint {job.spec.endpointName!r} does not exist")
        endpoint = BatchEndpoint.model_validate(endpoint_body)
        name = job.spec.deploymentName or endpoint.spec.defaultDeployment
        if name is None:
            raise NotStartable(
                "NoDefaultDeployment",
                f"BatchEndpoint {job.spec.endpointName!r} has no "
                "defaultDeployment and the job names no deploymentName",
            )
        body = self.store.get(BATCH_DEPLOYMENT.kind, namespace, name)
        if body is None:
            raise NotStartable("DeploymentNotFound", f"BatchDeployment {name!r} does not exist")
        deployment = BatchDeployment.model_validate(body)
        if deployment.spec.endpointName != job.spec.endpointName:
            raise NotStartable(
                "DeploymentNotFound",
                f"BatchDeployment {name!r} belongs to endpoint {deployment.spec.endpointName!r}",
            )
        return deployment

    async def reconcile_job(self, namespace: str, name: str) -> None:
        body = self.store.get(BATCH_JOB, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        ref = Ref(GROUP_VERSION, BATCH_JOB, namespace, name)
        previous = parse_status(BatchJobStatus, body)
        if previous.phase in ("Succeeded", "Failed"):
            return  # finished: nothing more to do, ever
        generation = body["metadata"].get("generation")
        now = utcnow()
        status = previous.model_copy(deep=True)
        status.observedGeneration = generation
        try:
            BatchJobSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            await self._not_started(
                ref, body, status, "InvalidSpec", "; ".join(schema_errors(exc, "spec")), now
            )
            return
        job = BatchJob.model_validate({**body, "status": previous.model_dump()})
        try:
            deployment = self._target(job)
        except ValidationError as exc:  # the endpoint's or deployment's own status says what is wrong
            await self._not_started(ref, body, status, "InvalidDeployment", str(exc).splitlines()[0], now)
            return
        except NotStartable as exc:
            await self._not_started(ref, body, status, exc.reason, exc.message, now)
            return
        settings = JobSettings.of(job.spec, deployment.spec)
        selector = {LABEL_BATCH_JOB: name}
        live = await self.kube.list("batch/v1", "Job", namespace, selector)
        owned = [
            j
            for j in live
            if any(o.get("uid") == body["metadata"]["uid"] for o in j["metadata"].get("ownerReferences", []))
        ]
        score_jobs = [j for j in owned if j["metadata"]["labels"].get(LABEL_BATCH_PHASE) == "score"]
        merge_job = next(
            (j for j in owned if j["metadata"]["labels"].get(LABEL_BATCH_PHASE) == "merge"), None
        )
        if not score_jobs:
            try:
                model = await models.resolve(deployment.spec.model, self.settings.mlflow_tracking_uri)
            except models.ResolveError as exc:
                await self._not_started(ref, body, status, "ModelNotResolved", str(exc), now)
                return
            for obj in render_progress(job, deployment):  # before the pods that use them
                await self.kube.create(obj)
            jobs = render_score_jobs(job, deployment, model, self.render_settings)
            await asyncio.gather(*(self.kube.create(j) for j in jobs))
            status.startTime = status.startTime or now
            status.phase = "Pending"
            status.outputUri = (
                output_file_uri(job.spec, settings)
                if settings.output_action == "appendRow"
                else job.spec.output.uri
            )
            status.conditions = merge_conditions(previous.conditions, [_started(len(jobs), generation)], now)
            await self._write_status(ref, body, status)
            return
        pods = await self.kube.list("v1", "Pod", namespace, selector)
        step = next_step(settings.instance_count, score_jobs, merge_job, pods)
        if step.merge and merge_job is None:
            await self.kube.create(render_merge_job(job, deployment, self.render_settings))
        if step.stop_scoring:
            await asyncio.gather(*(self._stop(j) for j in score_jobs if job_outcome(j) is None))
        if step.phase == "Failed" and merge_job is not None:
            await self._stop(merge_job)
        if step.summary is not None:
            status.miniBatches = Counts.model_validate(step.summary.miniBatches.model_dump())
            status.items = Counts.model_validate(step.summary.items.model_dump())
        else:
            progress = await self.kube.get(
                Ref("v1", "ConfigMap", namespace, contract.batch_progress_configmap(name))
            )
            status.miniBatches, status.items = sum_instances(
                [*progress_reports(progress), *reports(p for p in pods if _phase_of(p) == "score")]
            )
        status.progress = progress_text(status.miniBatches)
        status.phase = step.phase
        # While it runs, why a pod does not (unschedulable, image pull, a failed retry) is worth showing.
        status.message = step.message or (None if step.phase == "Succeeded" else pod_failure(pods))
        finished = step.phase in ("Succeeded", "Failed")
        if finished:
            status.completionTime = now
        conditions = [_started(len(score_jobs), generation)]
        if finished:
            conditions.append(
                condition("Complete", step.phase == "Succeeded", step.phase, step.message or "", generation)
            )
        status.conditions = merge_conditions(previous.conditions, conditions, now)
        await self._write_status(ref, body, status)

    async def _stop(self, job: Object) -> None:
        """No more pods: parallelism 0 stops the running ones (Job suspension needs 1.21+)."""
        meta = job["metadata"]
        if (job.get("spec") or {}).get("parallelism") == 0:
            return
        await self.kube.apply(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"parallelism": 0},
            }
        )

    async def _not_started(
        self, ref: Ref, body: Object, status: BatchJobStatus, reason: str, message: str, now: str
    ) -> None:
        status.phase = "Pending"
        status.message = message
        status.conditions = merge_conditions(
            status.conditions, [condition("Started", False, reason, message, status.observedGeneration)], now
        )
        await self._write_status(ref, body, status)

    async def _write_status(self, ref: Ref, body: Object, status: BatchJobStatus) -> None:
        current = body.get("status") or {}
        desired = status.model_dump(exclude_none=True)
        if current == desired:
            return
        await self.kube.patch_status(ref, {**{k: None for k in current if k not in desired}, **desired})


# --- kopf wiring ------------------------------------------------------------------------------------
def register(registry: kopf.OperatorRegistry, reconciler: BatchReconciler) -> None:
    """The batch kinds' handlers: the store's feed, reconcile triggers and the Job and pod watches."""
    store = reconciler.store

    def pending_jobs_of(namespace: str, endpoint: str | None) -> list[str]:
        return [
            name
            for name, b in store.attached_to(BATCH_JOB, namespace, endpoint).items()
            if (b.get("status") or {}).get("phase") in (None, "Pending")
        ]

    @kopf.on.event(API_GROUP, API_VERSION, "batchjobs", registry=registry)
    async def job_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
        namespace = namespace or ""
        if event["type"] == "DELETED":
            store.drop(BATCH_JOB, namespace, name)
            return
        old = store.put(BATCH_JOB, namespace, name, event["object"])
        if old is None or old.get("spec") != event["object"].get("spec"):
            reconciler.trigger(namespace, name)

    for kind in (BATCH_ENDPOINT, BATCH_DEPLOYMENT):

        def make(kind: str, plural: str) -> Any:
            # Indexed: kopf runs no handler before the initial listing is in, so after a restart no
            # job is judged against a cache still loading (a false EndpointNotFound on a running job).
            @kopf.index(API_GROUP, API_VERSION, plural, id=f"{plural}_index", registry=registry)
            def target_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
                store.put(kind, namespace or "", name, body)

            @kopf.on.event(API_GROUP, API_VERSION, plural, registry=registry)
            async def target_event(event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
                namespace = namespace or ""
                if event["type"] == "DELETED":
                    store.drop(kind, namespace, name)
                else:
                    store.put(kind, namespace, name, event["object"])
                spec = event["object"].get("spec", {})
                endpoint = name if kind == BATCH_ENDPOINT.kind else spec.get("endpointName")
                for job in pending_jobs_of(namespace, endpoint):  # jobs waiting for this one may start now
                    reconciler.trigger(namespace, job)

            return target_event

        make(kind.kind, kind.plural)

    async def child_event(event: kopf.RawEvent, namespace: str | None, labels: Any, **_: Any) -> None:
        owner = labels.get(LABEL_BATCH_JOB)
        if owner and event["type"] is not None:
            reconciler.trigger(namespace or "", owner)

    selector = {contract.LABEL_COMPONENT: contract.COMPONENT_BATCH}
    kopf.on.event("batch", "v1", "jobs", labels=selector, registry=registry)(child_event)
    kopf.on.event("", "v1", "pods", labels=selector, registry=registry)(child_event)
    # The scoring instances' progress reports (the job's progress ConfigMap).
    kopf.on.event("", "v1", "configmaps", labels=selector, registry=registry)(child_event)
