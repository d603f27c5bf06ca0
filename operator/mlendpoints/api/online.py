"""OnlineEndpoint and OnlineDeployment: real-time scoring behind one address, split by traffic."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlendpoints.api import cel, uris
from mlendpoints.api.common import (
    DNS_LABEL,
    NAME_MAX,
    Affinity,
    ApiModel,
    CodeConfiguration,
    Condition,
    EnvVar,
    ResourceRequirements,
    Toleration,
    nested,
)

Percent = Annotated[int, Field(ge=0, le=100, description="Percentage of requests.")]
MirrorPercent = Annotated[int, Field(ge=1, le=50, description="Percentage of live requests copied.")]
ProvisioningState = Literal["Creating", "Updating", "Succeeded", "Failed", "Deleting"]
MAX_DEPLOYMENTS = 20  # per endpoint, as in Azure ML; also bounds the CEL rules' cost


class RouterSettings(ApiModel):
    """The endpoint's router pods, which authenticate, split and mirror traffic."""

    replicas: int = Field(default=2, ge=1, description="Number of router pods.")
    resources: ResourceRequirements = nested(ResourceRequirements, "Router container resources.")
    nodeSelector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the router pods need."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the router pods tolerate."
    )


class ServiceSettings(ApiModel):
    """The Kubernetes Service that is the endpoint's scoring address."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations on the Service (e.g. for a cloud load balancer)."
    )


class TlsSettings(ApiModel):
    """HTTPS at the router (not an Azure ML field: Azure ML endpoints are always HTTPS)."""

    secretName: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="A kubernetes.io/tls Secret (tls.crt, tls.key) in the endpoint's namespace: the "
        "router serves HTTPS with it, reloading it when it changes.",
    )


class OnlineEndpointSpec(ApiModel):
    """Desired state of an online endpoint."""

    model_config = ApiModel.model_config | ConfigDict(json_schema_extra=cel.validations(cel.MIRROR_NOT_LIVE))

    authMode: Literal["key", "none", "token"] = Field(
        default="key",
        description="key: requests need a key from the <endpoint>-keys Secret; none: open; token: a "
        "Kubernetes bearer token whose identity RBAC lets create onlineendpoints/score of this endpoint.",
    )
    traffic: dict[str, Percent] = Field(
        default_factory=dict,
        max_length=MAX_DEPLOYMENTS,
        description="Live traffic share per deployment name; sums to 0 or 100.",
        json_schema_extra=cel.validations(cel.TRAFFIC_SUM),
    )
    mirrorTraffic: dict[str, MirrorPercent] = Field(
        default_factory=dict,
        max_length=1,
        description="Share of live traffic copied to one deployment with no live traffic (1-50%).",
    )
    router: RouterSettings = nested(RouterSettings, "Router pods.")
    service: ServiceSettings = nested(ServiceSettings, "The endpoint's Service.")
    tls: TlsSettings | None = Field(default=None, description="Serve HTTPS (unset: plain HTTP).")
    modelErrors: Literal["passthrough", "azureml"] = Field(
        default="passthrough",
        description="A model server's 4xx/5xx answer: passthrough (its status, as KServe and MLflow) or "
        "azureml (424, the model's status and reason in ms-azureml-model-error-statuscode and "
        "ms-azureml-model-error-reason, as Azure ML's endpoints; the body unchanged).",
    )
    description: str | None = Field(default=None, description="Free text.")


class DeploymentSummary(ApiModel):
    """One deployment of the endpoint, as seen by the endpoint."""

    name: str = Field(description="Deployment name.")
    replicas: int = Field(default=0, description="Pods that exist.")
    readyReplicas: int = Field(default=0, description="Pods ready to serve.")
    desiredReplicas: int | None = Field(default=None, description="Pods wanted now.")
    modelVersion: str | None = Field(default=None, description="Resolved model version it serves.")


class OnlineEndpointStatus(ApiModel):
    """Observed state of an online endpoint."""

    scoringUri: str | None = Field(default=None, description="In-cluster scoring URL.")
    openapiUri: str | None = Field(default=None, description="In-cluster OpenAPI document URL.")
    provisioningState: ProvisioningState | None = Field(
        default=None, description="Azure-style summary state."
    )
    traffic: dict[str, int] = Field(default_factory=dict, description="Traffic split the router applies.")
    mirrorTraffic: dict[str, int] = Field(
        default_factory=dict, description="Mirror split the router applies."
    )
    deployments: list[DeploymentSummary] = Field(
        default_factory=list, description="Deployments of this endpoint."
    )
    instances: str | None = Field(
        default=None, description="Ready/desired pods over all deployments, e.g. 3/4 (kubectl get oe)."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready, RouterReady, TrafficValid.")
    observedGeneration: int | None = Field(default=None, description="Generation last reconciled.")


class ScaleSettings(ApiModel):
    """Fixed instance count (default), CPU-based autoscaling (targetUtilization, an HPA), or scaling on
    requests in flight (concurrency: the operator scales on what the routers report; may go to zero)."""

    model_config = ApiModel.model_config | ConfigDict(
        json_schema_extra=cel.validations(cel.MIN_NOT_ABOVE_MAX, cel.ZERO_ONLY_WITH_CONCURRENCY)
    )

    type: Literal["default", "targetUtilization", "concurrency"] = Field(
        default="default", description="Scaling mode."
    )
    minInstances: int = Field(
        default=1, ge=0, description="targetUtilization, concurrency: fewest pods (0: concurrency only)."
    )
    maxInstances: int = Field(default=1, ge=1, description="targetUtilization, concurrency: most pods.")
    targetUtilizationPercentage: int = Field(
        default=70, ge=1, le=100, description="targetUtilization: CPU utilization the HPA aims at."
    )
    pollingInterval: int = Field(
        default=1, ge=1, description="targetUtilization: seconds per scaling step (the HPA's policy period)."
    )
    targetConcurrency: int | None = Field(
        default=None,
        ge=1,
        description="concurrency: requests in flight (or waiting) per pod to aim at; "
        "default requestSettings.maxConcurrentRequestsPerInstance.",
    )
    scaleToZeroAfterSeconds: int = Field(
        default=300, ge=1, description="concurrency, minInstances 0: seconds with no request before 0 pods."
    )
    stableWindowSeconds: int | None = Field(
        default=None,
        ge=6,
        le=3600,
        description="Seconds of load averaged before scaling down. concurrency: default 60 (Knative's KPA); "
        "targetUtilization: the HPA's scale-down stabilization window, default 300 (the HPA's).",
    )
    panicWindowSeconds: int | None = Field(
        default=None,
        ge=1,
        le=600,
        description="concurrency: seconds of load averaged to scale up fast (panic mode); "
        "default a tenth of the stable window.",
    )
    panicThresholdPercent: int = Field(
        default=200,
        ge=110,
        le=1000,
        description="concurrency: load over the panic window, in percent of what the ready pods target, "
        "that starts panic mode (scale up at once, never down, for a stable window).",
    )

    def stable_window_seconds(self) -> int:
        if self.stableWindowSeconds is not None:
            return self.stableWindowSeconds
        return 300 if self.type == "targetUtilization" else 60

    def panic_window_seconds(self) -> int:
        if self.panicWindowSeconds is not None:
            return self.panicWindowSeconds
        return max(1, self.stable_window_seconds() // 10)


class RequestSettings(ApiModel):
    """Per-request limits enforced by the router and the model server."""

    requestTimeoutMs: int = Field(default=5000, ge=1, description="Scoring timeout in milliseconds.")
    maxConcurrentRequestsPerInstance: int = Field(
        default=8, ge=1, description="Requests in flight per pod; more wait in the router."
    )
    maxQueueWaitMs: int | None = Field(
        default=None,
        ge=0,
        description="Longest a request waits in the router for a pod (starting from zero, or all busy) "
        "before a 503 with Retry-After; default 30000 with scaleSettings.type concurrency, "
        "else no wait (429 or 503 at once).",
    )


class ProbeSettings(ApiModel):
    """Probe timings, in seconds (Azure's ProbeSettings)."""

    initialDelay: int = Field(default=10, ge=0, description="Seconds before the first probe.")
    period: int = Field(default=10, ge=1, description="Seconds between probes.")
    timeout: int = Field(default=2, ge=1, description="Seconds a probe may take.")
    successThreshold: int = Field(default=1, ge=1, description="Successes to count as healthy.")
    failureThreshold: int = Field(default=30, ge=1, description="Failures to count as unhealthy.")


class BatchingSettings(ApiModel):
    """Continuous batching of concurrent requests by the model server.

    Without this section the server batches models whose predict is row-independent
    (scikit-learn, xgboost, lightgbm, a pyfunc with a tensor or column signature) and GPU
    deployments; the section turns it on for any model (`enabled: false`: off). A request runs
    at once when the model is idle; those arriving while it predicts go together next.
    A scoring script is never batched.
    """

    enabled: bool = Field(default=True, description="Batch concurrent requests; false: never.")
    maxBatchSize: int = Field(
        default=32, ge=1, description="Most rows per model call; larger requests run alone."
    )
    maxBatchTimeMs: int = Field(
        default=0,
        ge=0,
        description="Fixed wait for a batch to fill, in milliseconds; 0: none (a batch goes as soon as "
        "the model is free).",
    )


class DataCollection(ApiModel):
    """One collection of the data collector (Azure's collections.model_inputs / model_outputs)."""

    enabled: bool = Field(default=True, description="Keep these bodies in the records.")


class DataCollections(ApiModel):
    """What each record holds besides its metadata."""

    request: DataCollection = nested(DataCollection, "Request bodies (model inputs).")
    response: DataCollection = nested(DataCollection, "Response bodies (model outputs).")


class DataCollector(ApiModel):
    """Log sampled requests and responses to object storage, one JSON line each (Azure's data_collector).

    The endpoint's router collects off the request path; records go to
    <destination>/<endpoint>/<deployment>/<yyyy>/<mm>/<dd>/<hh>/<router-pod>-<seq>.jsonl.
    """

    enabled: bool = Field(default=True, description="Collect (the section's presence alone turns it on).")
    destination: str = Field(
        min_length=1,
        max_length=uris.MODEL_URI_MAX,
        pattern=r"^(s3|gs|gcs|abfss|abfs|az|wasbs|file|pvc)://.+|^/.+",
        description="Where records go: s3://, gs://, abfss:// (through fsspec, as mlendpoints-fetch) "
        "or an absolute path (a PVC mounted into the router pods, or a local folder in local mode).",
    )
    collections: DataCollections = nested(DataCollections, "Request and response bodies.")
    samplingRate: float = Field(
        default=1.0, ge=0, le=1, description="Share of requests recorded, 0 to 1 (decided per request id)."
    )
    rolling: Literal["hour", "day"] = Field(
        default="hour", description="Folder granularity: hour (<dd>/<hh>/) or day (<dd>/)."
    )
    maxBodyBytes: int = Field(
        default=64 * 1024, ge=0, description="Longer bodies are cut at this size and marked truncated."
    )
    headers: list[Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]] = Field(
        default_factory=list,
        max_length=32,
        description="Request header names to keep; none by default. Authorization is never kept.",
        json_schema_extra=cel.validations(cel.NO_AUTHORIZATION_HEADER),
    )
    credentialsSecret: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="Secret (same namespace) whose keys become the router pods' environment: the "
        "destination's credentials (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*), as for models.",
    )


class OnlineDeploymentSpec(ApiModel):
    """Desired state of an online deployment: one model version on a set of pods."""

    model_config = ApiModel.model_config | ConfigDict(
        json_schema_extra=cel.validations(cel.CPU_REQUEST_FOR_UTILIZATION)
    )

    endpointName: str = Field(
        description="The OnlineEndpoint (same namespace) this deployment serves.",
        pattern=DNS_LABEL,
        max_length=NAME_MAX,
    )
    model: str = Field(
        min_length=1,
        max_length=uris.MODEL_URI_MAX,
        description="Model URI, as mlendpoints-fetch accepts: models:/name/version, models:/name@alias, "
        "models:/name/latest, runs:/id/path, s3://, gs://, abfss://, https:// or a local path.",
        json_schema_extra=cel.validations(cel.MODEL_URI),
    )
    modelMountPath: str = Field(
        default="/var/mlendpoints/model",
        max_length=1024,
        description="Where the model is put in the pod.",
        json_schema_extra=cel.validations(cel.ABSOLUTE_PATH),
    )
    codeConfiguration: CodeConfiguration | None = Field(default=None, description="Custom scoring script.")
    image: str | None = Field(
        default=None,
        description="Container image; default: the serving image (CUDA variant when a GPU is requested).",
    )
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables for the server.")
    instanceCount: int = Field(default=1, ge=1, description="Pods, when scaleSettings.type is default.")
    scaleSettings: ScaleSettings = nested(ScaleSettings, "Scaling.")
    requestSettings: RequestSettings = nested(RequestSettings, "Request limits.")
    livenessProbe: ProbeSettings = nested(ProbeSettings, "Liveness probe (GET /).")
    readinessProbe: ProbeSettings | None = Field(
        default=None,
        description="Readiness probe (GET /health). Unset: Azure's defaults (after 10 s, every 10 s), or, "
        "with scaleSettings.type concurrency, every second from the start (held requests wait for it).",
    )
    resources: ResourceRequirements = nested(ResourceRequirements, "Server container resources.")
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods need.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    affinity: Affinity | None = Field(default=None, description="core/v1 Affinity of the pods.")
    serviceAccountName: str | None = Field(default=None, description="ServiceAccount the pods run as.")
    batching: BatchingSettings | None = Field(
        default=None,
        description="Batching of concurrent requests; unset: on for row-independent models (scikit-learn, "
        "xgboost, lightgbm, pyfunc with a tensor or column signature) and GPU deployments.",
    )
    workers: int | None = Field(default=None, ge=1, description="Server worker processes per pod.")
    envManager: Literal["local", "virtualenv"] = Field(
        default="local", description="local: the image's packages; virtualenv: the model's requirements."
    )
    modelRefreshInterval: int | None = Field(
        default=None,
        ge=10,
        description="Seconds between re-resolving models:/name@alias or /latest; a moved alias rolls out.",
    )
    dataCollector: DataCollector | None = Field(
        default=None, description="Record sampled requests and responses (the endpoint's router writes them)."
    )


class OnlineDeploymentStatus(ApiModel):
    """Observed state of an online deployment."""

    replicas: int = Field(default=0, description="Pods that exist.")
    readyReplicas: int = Field(default=0, description="Pods ready to serve.")
    desiredReplicas: int | None = Field(
        default=None, description="Pods wanted now (by instanceCount, the HPA or the concurrency scaler)."
    )
    modelUri: str | None = Field(default=None, description="The pinned model URI the pods fetch.")
    resolvedModelVersion: str | None = Field(
        default=None, description="Registry version the URI resolved to."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, ModelResolved, Progressing, Degraded; DataCollectorReady with a dataCollector.",
    )
    observedGeneration: int | None = Field(default=None, description="Generation last reconciled.")


class Resource(BaseModel):
    """A custom resource as stored: spec and status around standard metadata."""

    apiVersion: str = Field(description="mlendpoints.io/v1alpha1")
    kind: str = Field(description="Resource kind.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")


# Endpoint and deployment names become Service names.
_NAME_IS_DNS_LABEL = ConfigDict(json_schema_extra=cel.validations(cel.dns_label_name(NAME_MAX, DNS_LABEL)))


class OnlineEndpoint(Resource):
    """A scoring address in the cluster that splits requests across OnlineDeployments."""

    model_config = _NAME_IS_DNS_LABEL

    spec: OnlineEndpointSpec = nested(OnlineEndpointSpec, "Desired state.")
    status: OnlineEndpointStatus = Field(default_factory=OnlineEndpointStatus, description="Observed state.")


class OnlineDeployment(Resource):
    """One model (version) served by a set of pods behind an OnlineEndpoint."""

    model_config = _NAME_IS_DNS_LABEL

    spec: OnlineDeploymentSpec = Field(description="Desired state.")
    status: OnlineDeploymentStatus = Field(
        default_factory=OnlineDeploymentStatus, description="Observed state."
    )
