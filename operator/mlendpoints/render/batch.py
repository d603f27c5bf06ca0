"""BatchJob (+ its BatchDeployment) -> batch/v1 Jobs running `mlendpoints-batch`. Pure.

Scoring: one Indexed Job `<job>-score` (`completionMode: Indexed`), one pod per
instance; each driver reads its index from `$JOB_COMPLETION_INDEX`, and the Job records
which indexes completed (`status.completedIndexes`).
Merge: a second Job, `<job>-merge`, that the operator starts once every instance succeeded
(or one stopped the job at its error threshold, to record the failed summary). It is a
byte copy of the committed parts and reads no model, so it needs no fetch.

backoffLimit: the driver already retries mini-batches inside a pod; pod-level retries
(a killed or evicted pod) resume from the committed parts, so each instance gets as many
pod retries as mini-batch retries (`retrySettings.maxRetries`; an Indexed Job counts
failures over all its pods, so there it is that times `instanceCount`).

Inputs and outputs: `pvc://<claim>/<path>` mounts the claim and passes the local path;
anything else (s3://, gs://, abfss://, https://) goes to the driver as is, with credentials
from the deployment's `env` (secretKeyRef).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from mlendpoints.api.batch import BatchDeployment, BatchDeploymentSpec, BatchJob, BatchJobSpec
from mlendpoints.render import gpu
from mlendpoints.render.common import (
    CODE_DIR,
    CONTAINER_SECURITY_CONTEXT,
    MODEL_URI_ANNOTATION,
    TMP_DIR,
    Object,
    RenderSettings,
    child,
    credentials,
    dump,
    image_pull_secrets,
    labels,
    owner_reference,
    pod_security_context,
    with_default_resources,
)
from mlendpoints.render.deployment import ResolvedModel
from mlendpoints_serving import contract

LABEL_BATCH_JOB = "mlendpoints.io/batch-job"
LABEL_BATCH_PHASE = "mlendpoints.io/batch-phase"  # score | merge
PVC_SCHEME = "pvc://"
PVC_ROOT = "/mnt/mlendpoints"
MODEL_DIR = "/var/mlendpoints/model"
DRIVER_CONTAINER = "batch"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where clients look for a token


@dataclass(frozen=True)
class JobSettings:
    """The deployment's settings with the job's overrides applied."""

    instance_count: int
    max_concurrency: int
    mini_batch_size: int
    output_action: str
    output_file_name: str
    output_format: str
    output_header: bool
    partition_outputs: bool
    max_retries: int
    timeout: int
    error_threshold: int
    logging_level: str

    @classmethod
    def of(cls, job: BatchJobSpec, dep: BatchDeploymentSpec) -> JobSettings:
        o, s = job.overrides, dep.settings
        retry = o.retrySettings
        return cls(
            instance_count=o.instanceCount or dep.resources.instanceCount,
            max_concurrency=o.maxConcurrencyPerInstance or s.maxConcurrencyPerInstance,
            mini_batch_size=o.miniBatchSize or s.miniBatchSize,
            output_action=o.outputAction or s.outputAction,
            output_file_name=o.outputFileName or s.outputFileName,
            output_format=o.outputFormat or s.outputFormat,
            output_header=s.outputHeader if o.outputHeader is None else o.outputHeader,
            partition_outputs=s.partitionOutputs if o.partitionOutputs is None else o.partitionOutputs,
            max_retries=s.retrySettings.maxRetries
            if retry is None or retry.maxRetries is None
            else retry.maxRetries,
            timeout=s.retrySettings.timeout if retry is None or retry.timeout is None else retry.timeout,
            error_threshold=s.errorThreshold if o.errorThreshold is None else o.errorThreshold,
            logging_level=o.loggingLevel or s.loggingLevel,
        )


def progress_identity(job: str) -> str:
    """The ServiceAccount, Role and RoleBinding of a job's scoring pods."""
    return f"{job}-batch"


def score_job_name(job: str) -> str:
    return f"{job}-score"


def merge_job_name(job: str) -> str:
    return f"{job}-merge"


def output_file_uri(job: BatchJobSpec, settings: JobSettings) -> str:
    """The rows file (or, partitioned, the folder of per-input files)."""
    rows = contract.batch_rows_name(
        settings.output_file_name, settings.output_format, settings.partition_outputs
    )
    return posixpath.join(job.output.uri.rstrip("/"), rows)


def _storage(uri: str) -> tuple[str, str | None]:
    """(what the driver gets, the PVC claim to mount or None)."""
    if not uri.startswith(PVC_SCHEME):
        return uri, None
    claim, _, path = uri[len(PVC_SCHEME) :].partition("/")
    return posixpath.join(PVC_ROOT, claim, path).rstrip("/"), claim


def settings_args(s: JobSettings) -> list[str]:
    """The driver's flags for the job's settings (shared with `mlendpoints batch run`)."""
    args = [
        "--mini-batch-size", str(s.mini_batch_size),
        "--max-concurrency", str(s.max_concurrency),
        "--output-action", s.output_action,
        "--output-file-name", s.output_file_name,
        "--max-retries", str(s.max_retries),
        "--retry-timeout", str(s.timeout),
        "--error-threshold", str(s.error_threshold),
        "--logging-level", s.logging_level,
        "--instance-count", str(s.instance_count),
    ]  # fmt: skip
    if s.output_format != "csv":  # the driver's defaults: the flags of a csv job are as before
        args += ["--output-format", s.output_format]
    if s.partition_outputs:
        args += ["--partition-outputs"]
    if not s.output_header:
        args += ["--no-output-header"]
    return args


def batch_model_dir(dep: BatchDeploymentSpec) -> str:
    """Where the model's files are: MODEL_DIR, or with codeConfiguration.modelFolder a folder of that
    name in it (AZUREML_MODEL_DIR/<folder> for the script, as under Azure ML)."""
    code = dep.codeConfiguration
    return (
        MODEL_DIR if code is None or code.modelFolder is None else posixpath.join(MODEL_DIR, code.modelFolder)
    )


def driver_args(job: BatchJobSpec, dep: BatchDeploymentSpec, s: JobSettings, phase: str) -> list[str]:
    args = [
        "--model-dir", batch_model_dir(dep),
        "--input", _storage(job.input.uri)[0],
        "--input-type", job.input.type,
        "--output", _storage(job.output.uri)[0],
        *settings_args(s),
        "--phase", phase,
    ]  # fmt: skip
    if dep.codeConfiguration is not None:
        args += ["--scoring-script", f"{CODE_DIR}/{dep.codeConfiguration.scoringScript}"]
        if batch_model_dir(dep) != MODEL_DIR:  # Azure's layout: the model in a folder of the mount
            args += [contract.FLAG_AZUREML_MODEL_DIR, MODEL_DIR]
    return args


def _pod_spec(
    job: BatchJob,
    deployment: BatchDeployment,
    model: ResolvedModel | None,
    args: list[str],
    settings: RenderSettings,
) -> Object:
    """The pod of one instance (`model` given: fetch it first) or of the merge (`model` None)."""
    dep = deployment.spec
    gpus = gpu.gpu_count(dep.resources)
    image = dep.image or (settings.serving_image_gpu if gpus else settings.serving_image)
    resources = with_default_resources(gpu.container_resources(dep.resources), settings.default_resources)
    fetch_resources = gpu.without_gpu(resources)  # the model fetch needs no GPU
    if model is None:  # the merge reads and writes files: no GPU either
        resources, gpus = fetch_resources, 0
    # The driver reads inputs and writes outputs in the object stores; the fetch also reaches MLflow.
    creds = credentials(settings)
    mlflow_env, env_from = creds.env, creds.env_from
    env = [
        {"name": "HOME", "value": TMP_DIR},
        {"name": "TMPDIR", "value": TMP_DIR},
        *(dump(e) for e in dep.env),
    ]
    mounts: list[Object] = [
        {"name": "model", "mountPath": MODEL_DIR},
        {"name": "tmp", "mountPath": TMP_DIR},
        *creds.mounts,
    ]
    volumes: list[Object] = [
        {"name": "model", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        *creds.volumes,
    ]
    claims: dict[str, bool] = {}  # claim -> read only
    input_claim, output_claim = _storage(job.spec.input.uri)[1], _storage(job.spec.output.uri)[1]
    if input_claim:
        claims[input_claim] = True
    if output_claim:
        claims[output_claim] = False
    for i, (claim, read_only) in enumerate(sorted(claims.items())):
        volumes.append(
            {"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
        )
        mounts.append(
            {"name": f"pvc-{i}", "mountPath": posixpath.join(PVC_ROOT, claim), "readOnly": read_only}
        )
    if dep.codeConfiguration is not None:
        volumes.append({"name": "code", "configMap": {"name": dep.codeConfiguration.configMap}})
        mounts.append({"name": "code", "mountPath": CODE_DIR, "readOnly": True})
    driver = {
        "name": DRIVER_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlendpoints-batch"],
        "args": args,
        "env": mlflow_env + gpu.gpu_env(env, gpus) + env,
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod: Object = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(settings),
        "automountServiceAccountToken": False,  # scoring pods: a token for the driver only (_report_progress)
        "containers": [driver],
        "volumes": volumes,
        "nodeSelector": dep.nodeSelector,
        "tolerations": gpu.tolerations(dep.tolerations, gpu.gpu_count(dep.resources)),
    }
    if env_from:
        driver["envFrom"] = env_from
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = image_pull_secrets(settings)
    if model is not None:
        pod["initContainers"] = [{
            "name": "fetch-model",
            "image": image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": ["mlendpoints-fetch"],
            "args": ["--model-uri", model.uri, "--dest", batch_model_dir(dep)],
            "env": env[:2] + mlflow_env + env[2:],
            "envFrom": env_from,
            "resources": fetch_resources,
            "volumeMounts": mounts[: 2 + len(creds.mounts)],
            "securityContext": CONTAINER_SECURITY_CONTEXT,
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }]  # fmt: skip
    return pod


def _report_progress(job: BatchJob, pod: Object) -> None:
    """Scoring pods report progress to the job's ConfigMap: they run as the job's ServiceAccount,
    whose token (with the cluster's CA and the namespace) is mounted into the driver container only;
    the model fetch, which runs what a model URI names, never sees it."""
    name = job.metadata["name"]
    pod["serviceAccountName"] = progress_identity(name)
    pod["volumes"].append(
        {
            "name": "progress-token",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                        }
                    },
                ]
            },
        }
    )
    [driver] = pod["containers"]
    driver["volumeMounts"].append(
        {"name": "progress-token", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}
    )
    driver["args"] += ["--progress-configmap", contract.batch_progress_configmap(name)]


def render_progress(job: BatchJob, deployment: BatchDeployment) -> list[Object]:
    """The job's progress ConfigMap and the identity that may get and patch it, and nothing else."""
    meta = job.metadata
    name, namespace = meta["name"], meta["namespace"]
    owner = owner_reference("BatchJob", name, meta["uid"])
    obj_labels = {
        **labels(job.spec.endpointName, contract.COMPONENT_BATCH, deployment.metadata["name"]),
        LABEL_BATCH_JOB: name,
    }
    identity, configmap = progress_identity(name), contract.batch_progress_configmap(name)

    def make(api_version: str, kind: str, obj_name: str, body: Object) -> Object:
        return child(api_version, kind, obj_name, namespace, owner, obj_labels, body)

    rbac = "rbac.authorization.k8s.io/v1"
    return [
        make("v1", "ConfigMap", configmap, {"data": {}}),
        make("v1", "ServiceAccount", identity, {"automountServiceAccountToken": False}),
        make(
            rbac,
            "Role",
            identity,
            {
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "resourceNames": [configmap],
                        "verbs": ["get", "patch"],
                    }
                ]
            },
        ),
        make(
            rbac,
            "RoleBinding",
            identity,
            {
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": identity},
                "subjects": [{"kind": "ServiceAccount", "name": identity, "namespace": namespace}],
            },
        ),
    ]


def _job(
    job: BatchJob,
    deployment: BatchDeployment,
    name: str,
    phase: str,
    spec: Object,
    pod: Object,
    annotations: dict[str, str],
) -> Object:
    meta = job.metadata
    owner = owner_reference("BatchJob", meta["name"], meta["uid"])
    obj_labels = {
        **labels(job.spec.endpointName, contract.COMPONENT_BATCH, deployment.metadata["name"]),
        LABEL_BATCH_JOB: meta["name"],
        LABEL_BATCH_PHASE: phase,
    }
    template = {"metadata": {"labels": obj_labels, "annotations": annotations}, "spec": pod}
    return child(
        "batch/v1",
        "Job",
        name,
        meta["namespace"],
        owner,
        obj_labels,
        {"spec": {**spec, "template": template}},
    )


def render_score_jobs(
    job: BatchJob, deployment: BatchDeployment, model: ResolvedModel, settings: RenderSettings
) -> list[Object]:
    """The scoring Job: one Indexed Job of `instanceCount` completions, all in parallel."""
    s = JobSettings.of(job.spec, deployment.spec)
    args = driver_args(job.spec, deployment.spec, s, "score")
    spec = {
        "completionMode": "Indexed",
        "completions": s.instance_count,
        "parallelism": s.instance_count,
        "backoffLimit": s.max_retries * s.instance_count,
    }
    pod = _pod_spec(job, deployment, model, args, settings)
    _report_progress(job, pod)
    name = score_job_name(job.metadata["name"])
    return [_job(job, deployment, name, "score", spec, pod, {MODEL_URI_ANNOTATION: model.uri})]


def render_merge_job(job: BatchJob, deployment: BatchDeployment, settings: RenderSettings) -> Object:
    s = JobSettings.of(job.spec, deployment.spec)
    args = driver_args(job.spec, deployment.spec, s, "merge")
    spec = {"completions": 1, "parallelism": 1, "backoffLimit": s.max_retries}
    pod = _pod_spec(job, deployment, None, args, settings)
    return _job(job, deployment, merge_job_name(job.metadata["name"]), "merge", spec, pod, {})
