"""The one contract between the control plane and the data plane.

Everything the operator (or `mlendpoints local`) hands to a data-plane process
is declared here: ports, labels, environment variable names, the schema of the
router's config file, the batch driver's status objects and its failure reasons.
It is pure pydantic with no heavy imports, so the control plane may import this
module (and only this module) of `mlendpoints_serving`; an import-linter contract
in pyproject.toml enforces that. docs/contract.md describes it in prose.
"""

from __future__ import annotations

import enum
import json
import posixpath
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# --- ports -------------------------------------------------------------------
SERVER_PORT = 5001  # mlendpoints-serve inside a deployment pod (Azure's inference server port)
ROUTER_PORT = 8080  # mlendpoints-router inside a router pod; the endpoint Service maps 80 -> 8080
# (443 -> 8080 with spec.tls: the router serves HTTPS on ROUTER_PORT.)
# Plain HTTP, the router's own paths only (/health, /metrics, ROUTER_SCALING_PATH), never scoring:
# the operator's scaler and Prometheus scrape pods by IP, which a TLS certificate does not name.
ROUTER_ADMIN_PORT = 8081

# --- router TLS (OnlineEndpoint spec.tls) ------------------------------------
# The kubernetes.io/tls Secret is mounted here (read-only); the router reloads its files on change.
ROUTER_TLS_MOUNT = "/etc/mlendpoints/tls"
TLS_CERT_KEY = "tls.crt"  # the keys of a kubernetes.io/tls Secret
TLS_KEY_KEY = "tls.key"
FLAG_ROUTER_ADMIN_PORT = "--admin-port"  # env: MLENDPOINTS_ROUTER_ADMIN_PORT
FLAG_ROUTER_TLS_CERT_FILE = "--tls-cert-file"  # env: MLENDPOINTS_ROUTER_TLS_CERT_FILE
FLAG_ROUTER_TLS_KEY_FILE = "--tls-key-file"  # env: MLENDPOINTS_ROUTER_TLS_KEY_FILE

# --- labels put on every child object ----------------------------------------
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlendpoints"
LABEL_ENDPOINT = "mlendpoints.io/endpoint"
LABEL_DEPLOYMENT = "mlendpoints.io/deployment"
LABEL_COMPONENT = "mlendpoints.io/component"  # one of the COMPONENT_* values below
LABEL_SERVICE_NAME = "kubernetes.io/service-name"  # set by Kubernetes on EndpointSlices

# --- values of LABEL_COMPONENT, and the name of that component's main container ------------------------
COMPONENT_ROUTER = "router"  # an OnlineEndpoint's router pods (mlendpoints-router)
COMPONENT_SERVER = "server"  # an OnlineDeployment's model-server pods (mlendpoints-serve)
COMPONENT_BATCH = "batch"  # a BatchJob's Jobs and driver pods (mlendpoints-batch)

# --- request headers ---------------------------------------------------------
HEADER_DEPLOYMENT = "x-mlendpoints-deployment"  # pin a request to a deployment
HEADER_DEPLOYMENT_AZURE = "azureml-model-deployment"  # accepted alias, as Azure ML
HEADER_REQUEST_ID = "x-request-id"
HEADER_SERVED_BY = "x-mlendpoints-served-by"  # the deployment that answered
# The same, under the name Azure ML's clients read on a response (also its request pin, above).
HEADER_SERVED_BY_AZURE = HEADER_DEPLOYMENT_AZURE
HEADER_REROUTED = "x-mlendpoints-rerouted"  # set when a share was moved off a deployment with no ready pod
# On a scoring script's /score answer, as azmlinfsrv: "True" when run() raised, else "False".
HEADER_RUN_FUNCTION_FAILED = "x-ms-run-function-failed"
# On a scoring script's /score answer when run() returned, as azmlinfsrv: its time in ms ("12.345").
HEADER_RUN_FN_EXEC_MS = "x-ms-run-fn-exec-ms"

# --- environment variables ---------------------------------------------------
ENV_MODEL_DIR = "MLENDPOINTS_MODEL_DIR"  # set for scoring scripts, as AZUREML_MODEL_DIR
ENV_AZUREML_MODEL_DIR = "AZUREML_MODEL_DIR"
# codeConfiguration.modelFolder: one folder name, not "." or ".."; the model is fetched into
# <mount>/<it> and a scoring script gets AZUREML_MODEL_DIR=<mount> (--azureml-model-dir), as Azure
# ML lays out a model registered from a folder.
MODEL_FOLDER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]*$"
FLAG_AZUREML_MODEL_DIR = "--azureml-model-dir"
# A scoring-script server's CORS origins (comma-separated), read as azmlinfsrv reads it.
ENV_AML_CORS_ORIGINS = "AML_CORS_ORIGINS"
# A scoring-script server's limit on one run() in ms, read as azmlinfsrv reads it: past it the
# client gets azmlinfsrv's 500 "Scoring timeout after N ms" (the request timeout still applies).
ENV_SCORING_TIMEOUT_MS = "SCORING_TIMEOUT_MS"
ENV_OUTPUT_DIR = "MLENDPOINTS_OUTPUT_DIR"  # batch: the output URI, for a script that writes there itself
# batch: a local folder a scoring script writes its own files into; they are committed with the
# mini-batch (exactly once) and land in the output folder under the same relative path.
ENV_BATCH_OUTPUT_DIR = "MLENDPOINTS_BATCH_OUTPUT_DIR"
ENV_AZUREML_BI_OUTPUT_PATH = "AZUREML_BI_OUTPUT_PATH"  # the same folder under Azure's name
ENV_TERMINATION_LOG = "MLENDPOINTS_TERMINATION_LOG"  # where a fatal error's one-line reason is written
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# Every setting of an entry point can also come from an env var: this prefix, then the setting's
# name in upper case (`--max-batch-size` -> MLENDPOINTS_SERVE_MAX_BATCH_SIZE).
ENV_PREFIX_SERVE = "MLENDPOINTS_SERVE_"
ENV_PREFIX_ROUTER = "MLENDPOINTS_ROUTER_"
ENV_PREFIX_FETCH = "MLENDPOINTS_FETCH_"
ENV_PREFIX_BATCH = "MLENDPOINTS_BATCH_"
# The address the servers listen on (default all addresses, right in a pod); `mlendpoints local`
# sets them to loopback.
ENV_SERVE_HOST = f"{ENV_PREFIX_SERVE}HOST"
ENV_ROUTER_HOST = f"{ENV_PREFIX_ROUTER}HOST"

# --- model inputs for any pod (the operator's mutating webhook, docs/contract.md) ------------------
# A pod opts in with this label set to "true"; the webhook's objectSelector matches only it, so
# unlabelled pods never reach the webhook.
LABEL_INJECT_MODELS = "mlendpoints.io/inject-models"
ANNOTATION_MODELS = "mlendpoints.io/models"  # JSON {input name: model URI}, written by the user
ANNOTATION_RESOLVED_MODELS = "mlendpoints.io/resolved-models"  # JSON {input name: pinned URI}, by the webhook
INPUTS_ROOT = "/var/mlendpoints/inputs"  # each input is mounted read-only at INPUTS_ROOT/<name>
ENV_PREFIX_INPUT = "MLENDPOINTS_INPUT_"  # + the input's name upper-cased, '-' -> '_': its directory
# mlendpoints-fetch --mode: `model` (default) needs an MLflow model (archives unpacked, a pickled
# estimator wrapped); `input` puts whatever the URI names in DIR as is, a single file as DIR/<filename>.
FETCH_MODE_MODEL: Final = "model"
FETCH_MODE_INPUT: Final = "input"

# --- auth (OnlineEndpoint spec.authMode; docs/contract.md "Auth") -------------------------------------
# key: `Authorization: Bearer <key>` against the keys Secret; none: open; token: a Kubernetes bearer
# token (e.g. a projected ServiceAccount token), checked with a TokenReview, then a SubjectAccessReview
# for `create` on the endpoint's subresource below (plain RBAC grants scoring).
AuthMode = Literal["key", "none", "token"]
# How the router answers a model server's 4xx/5xx: as it is, or as Azure ML's endpoints do (424 Failed
# Dependency, the model's status and reason phrase in these headers, its body unchanged).
ModelErrors = Literal["passthrough", "azureml"]
STATUS_MODEL_ERROR = 424
HEADER_MODEL_ERROR_STATUS = "ms-azureml-model-error-statuscode"
HEADER_MODEL_ERROR_REASON = "ms-azureml-model-error-reason"
SCORE_SUBRESOURCE = "score"  # RBAC: apiGroups [mlendpoints.io], resources [onlineendpoints/score]
SCORE_VERB = "create"
SCORE_API_GROUP = "mlendpoints.io"
SCORE_RESOURCE = "onlineendpoints"
# How long the router keeps a review's answer, keyed by a hash of the token (never the token):
# short, so a revoked grant or a deleted ServiceAccount stops working within seconds; denials shorter,
# so a grant just made works soon.
FLAG_ROUTER_TOKEN_ALLOWED_TTL_S = "--token-allowed-ttl-s"  # env: MLENDPOINTS_ROUTER_TOKEN_ALLOWED_TTL_S
FLAG_ROUTER_TOKEN_DENIED_TTL_S = "--token-denied-ttl-s"  # env: MLENDPOINTS_ROUTER_TOKEN_DENIED_TTL_S
FLAG_ROUTER_TOKEN_CACHE_SIZE = "--token-cache-size"  # env: MLENDPOINTS_ROUTER_TOKEN_CACHE_SIZE
TOKEN_ALLOWED_TTL_S = 10.0
TOKEN_DENIED_TTL_S = 5.0
TOKEN_CACHE_SIZE = 10_000
# The `error.code` of the router's answers in token mode.
REASON_TOKEN_MISSING = "unauthorized"  # 401: no bearer token (the key mode's code too)
REASON_TOKEN_INVALID = "token_invalid"  # 401: the TokenReview did not authenticate it
REASON_TOKEN_FORBIDDEN = "forbidden"  # 403: the SubjectAccessReview denied scoring
REASON_TOKEN_REVIEW_UNAVAILABLE = "auth_unavailable"  # 503: the API server could not answer
# The operator binds each token-mode endpoint's router ServiceAccount to this ClusterRole (the chart's
# `<release>-router-auth-delegator`: tokenreviews and subjectaccessreviews create, nothing else).
ROUTER_AUTH_BINDING_PREFIX = "mlendpoints-router-auth"  # ClusterRoleBinding <prefix>-<namespace>-<name>
COMPONENT_ROUTER_AUTH = "router-auth"  # LABEL_COMPONENT of those ClusterRoleBindings
LABEL_ENDPOINT_NAMESPACE = "mlendpoints.io/endpoint-namespace"  # cluster-scoped children name theirs

# --- keys --------------------------------------------------------------------
SECRET_PRIMARY_KEY = "primaryKey"
SECRET_SECONDARY_KEY = "secondaryKey"


def keys_secret_name(endpoint: str) -> str:
    return f"{endpoint}-keys"


def router_configmap_name(endpoint: str) -> str:
    return f"{endpoint}-router"


ROUTER_CONFIG_KEY = "router.json"  # key of the router ConfigMap holding RouterConfig as JSON


class DeploymentRoute(BaseModel):
    """Where one deployment's pods are and how to talk to them."""

    model_config = ConfigDict(extra="forbid")

    backends: list[str] = Field(
        default_factory=list, description="Static 'host:port' backends (file mode, local endpoints, tests)."
    )
    service: str | None = Field(
        default=None,
        description="Kubernetes Service whose EndpointSlices list the ready pods (cluster mode).",
    )
    port: int = Field(default=SERVER_PORT, description="Pod port, used with `service`.")
    requestTimeoutMs: int = Field(default=5000, ge=1)
    maxConcurrentRequestsPerInstance: int = Field(default=8, ge=1)
    modelVersion: str | None = Field(
        default=None, description="Model version served; put in collected records."
    )
    collector: CollectorRoute | None = Field(
        default=None, description="Data collection of this deployment's requests and responses."
    )
    maxQueueWaitMs: int | None = Field(
        default=None,
        ge=0,
        description="Hold a request this long for a free pod (none ready, or all at their limit) before "
        "503 with Retry-After; None: answer 503 (no pod) or 429 (all busy) at once.",
    )
    maxQueuedRequests: int = Field(
        default=1000, ge=1, description="Requests held at once for this deployment; more get 503 at once."
    )
    autoscaled: bool = Field(
        default=False,
        description="Scaled on its load (scaleSettings.type concurrency): the router integrates its "
        "requests in flight and held over time for the scaler (ROUTER_SCALING_PATH).",
    )


class RouterConfig(BaseModel):
    """The router's config file (file mode) or the `router.json` key of its ConfigMap (cluster mode)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    namespace: str | None = None
    authMode: AuthMode = "key"
    keysFile: str | None = Field(
        default=None,
        description="File mode: JSON {primaryKey, secondaryKey}, or a directory with files of those names.",
    )
    keysSecret: str | None = Field(default=None, description="Cluster mode: Secret watched for the keys.")
    traffic: dict[str, int] = Field(
        default_factory=dict, description="Live share per deployment; sums to 0 or 100."
    )
    mirrorTraffic: dict[str, int] = Field(
        default_factory=dict, description="Share of live, unpinned requests copied to a shadow deployment."
    )
    deployments: dict[str, DeploymentRoute] = Field(default_factory=dict)
    maxBodyBytes: int = Field(default=16 * 1024 * 1024, ge=1)
    mirrorMaxInFlight: int = Field(default=64, ge=1)
    accessLog: bool = False
    modelErrors: ModelErrors = Field(
        default="passthrough", description="A model server's 4xx/5xx as it is, or as Azure ML's 424."
    )
    collectorQueueRecords: int = Field(
        default=10000, ge=1, description="Collected records held in memory; more are dropped and counted."
    )
    collectorFlushSeconds: float = Field(
        default=1.0, gt=0, description="Longest a record waits to be written."
    )

    @model_validator(mode="after")
    def _check_shares(self) -> RouterConfig:
        for field, shares in (("traffic", self.traffic), ("mirrorTraffic", self.mirrorTraffic)):
            for name, share in shares.items():
                if name not in self.deployments:
                    known = sorted(self.deployments)
                    raise ValueError(f"{field}.{name}: no such deployment (known: {known})")
                if share < 0:
                    raise ValueError(f"{field}.{name}: share must be >= 0, got {share}")
        total = sum(self.traffic.values())
        if total not in (0, 100):
            raise ValueError(f"traffic: shares must sum to 0 or 100, got {total}")
        mirrored = {name: share for name, share in self.mirrorTraffic.items() if share > 0}
        if len(mirrored) > 1:
            raise ValueError(f"mirrorTraffic: at most one deployment may be mirrored, got {sorted(mirrored)}")
        for name, share in mirrored.items():
            if share > 50:
                raise ValueError(f"mirrorTraffic.{name}: share must be <= 50, got {share}")
            if self.traffic.get(name, 0) > 0:
                raise ValueError(f"mirrorTraffic.{name}: a deployment cannot take live and mirror traffic")
        return self


# --- autoscaling on load (scaleSettings.type concurrency; docs/contract.md "Autoscaling") -------------
# Every router pod answers GET ROUTER_SCALING_PATH on ROUTER_PORT (and ROUTER_ADMIN_PORT, which the
# operator scrapes) with a ScalingReport. The operator
# scrapes each router of an endpoint every second or so and adds the reports up per deployment.
ROUTER_SCALING_PATH = "/-/scaling"
RETRY_AFTER_STARTING_S = 5  # Retry-After of a 503 for a held request that timed out waiting for a pod


class DeploymentLoad(BaseModel):
    """One deployment's load as one router pod sees it. Counters only grow (for the life of the
    router process, named by ScalingReport.instance): a scraper takes differences between reports."""

    inFlight: int = Field(description="Requests sent to a pod and not yet answered (live and mirror).")
    queued: int = Field(description="Requests held, waiting for a pod.")
    requests: int = Field(description="Requests that arrived for this deployment (counter).")
    concurrencySeconds: float = Field(
        description="Integral over time of inFlight + queued (counter; its rate is the mean concurrency)."
    )


class ScalingReport(BaseModel):
    """A router pod's answer on ROUTER_SCALING_PATH."""

    instance: str = Field(description="Random per router process: counters restart when it changes.")
    deployments: dict[str, DeploymentLoad] = Field(default_factory=dict)


# --- data collection (the router's collector; docs/contract.md "Data collection") -----------------
# Files: <destination>/<endpoint>/<deployment>/<yyyy>/<mm>/<dd>/<hh>/<router-pod>-<seq>.jsonl
# (rolling `day`: no <hh> level). One JSON line (CollectedRecord) per sampled request.
COLLECTOR_SUFFIX = ".jsonl"
COLLECTOR_ROLES: Final = ("live", "mirror")
# The router reports its destinations' health in this ConfigMap (one per collecting deployment, key:
# the router pod's name, value: CollectorHealth as JSON); the operator turns it into the
# OnlineDeployment's DataCollectorReady condition.
ENV_POD_NAME = "MLENDPOINTS_POD_NAME"  # the router pod's name (downward API); else the host name


def collector_status_configmap_name(deployment: str) -> str:
    return f"{deployment}-collector"


def collector_partition(
    endpoint: str, deployment: str, year: int, month: int, day: int, hour: int | None
) -> str:
    """The folder of one hour's (or day's, hour None) files, relative to the destination."""
    parts = [endpoint, deployment, f"{year:04d}", f"{month:02d}", f"{day:02d}"]
    if hour is not None:
        parts.append(f"{hour:02d}")
    return "/".join(parts)


class CollectorRoute(BaseModel):
    """What the router collects of one deployment's requests (OnlineDeployment.spec.dataCollector)."""

    model_config = ConfigDict(extra="forbid")

    destination: str = Field(
        description="fsspec URI or local path; records go under <endpoint>/<deployment>/."
    )
    request: bool = Field(default=True, description="Keep request bodies.")
    response: bool = Field(default=True, description="Keep response bodies.")
    samplingRate: float = Field(default=1.0, ge=0, le=1)
    rolling: Literal["hour", "day"] = "hour"
    maxBodyBytes: int = Field(
        default=64 * 1024, ge=0, description="Longer bodies are cut and marked truncated."
    )
    headers: list[str] = Field(
        default_factory=list, description="Request headers kept (never Authorization)."
    )


class CollectedBody(BaseModel):
    body: str = Field(description="The body: UTF-8 text, or base64 when it is not UTF-8 (`encoding`).")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    size: int = Field(description="Size in bytes of the whole body, before truncation.")
    truncated: bool = Field(default=False, description="The body was cut at maxBodyBytes.")
    headers: dict[str, str] | None = Field(default=None, description="Request: the headers kept.")


class CollectedRecord(BaseModel):
    """One line of a collected file: one request as the router saw it (live or mirror copy)."""

    requestId: str = Field(
        description="x-request-id: the client's, else the router's; live and mirror share it."
    )
    endpoint: str
    deployment: str
    modelVersion: str | None = None
    role: Literal["live", "mirror"]
    time: str = Field(description="When the router received the request, RFC 3339 UTC.")
    latencyMs: float = Field(description="Router to deployment and back, in milliseconds.")
    status: int = Field(description="HTTP status of the deployment's answer (the router's on its errors).")
    request: CollectedBody | None = Field(default=None, description="When the request collection is on.")
    response: CollectedBody | None = Field(default=None, description="When the response collection is on.")


class CollectorHealth(BaseModel):
    """A router pod's view of one deployment's destination, in the collector-status ConfigMap."""

    ok: bool
    error: str | None = None
    at: str = Field(description="When this was last written, RFC 3339 UTC.")
    written: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class AnswerComparison:
    """A live answer against its mirror's, as the router's shadow metrics and `mlendpoints compare` count it.

    Leaves of the two JSON documents are matched by path: floats are numbers (absolute difference),
    everything else (strings, integers, booleans, null) is a label (exact match). `equal` holds when
    the shapes match, every label is equal and every number is within 1e-9 relative.
    """

    equal: bool
    labels: int = 0
    labels_equal: int = 0
    numbers: int = 0
    abs_diff_sum: float = 0.0
    abs_diff_max: float = 0.0


def _leaves(value: object, path: str, out: dict[str, object]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _leaves(item, f"{path}/{key}", out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _leaves(item, f"{path}/{index}", out)
    else:
        out[path] = value


def compare_answers(live: str | bytes, mirror: str | bytes) -> AnswerComparison:
    """Compare two JSON answers (not JSON: equal only when byte-identical)."""
    try:
        live_doc, mirror_doc = json.loads(live), json.loads(mirror)
    except ValueError:
        return AnswerComparison(equal=live == mirror)
    a: dict[str, object] = {}
    b: dict[str, object] = {}
    _leaves(live_doc, "", a)
    _leaves(mirror_doc, "", b)
    if a.keys() != b.keys():
        return AnswerComparison(equal=False)
    equal, labels, labels_equal, numbers, diff_sum, diff_max = True, 0, 0, 0, 0.0, 0.0
    for path, x in a.items():
        y = b[path]
        numeric = isinstance(x, int | float) and isinstance(y, int | float) and not isinstance(x, bool)
        if numeric and (isinstance(x, float) or isinstance(y, float)):
            diff = abs(float(x) - float(y))  # type: ignore[arg-type]
            numbers += 1
            diff_sum += diff
            diff_max = max(diff_max, diff)
            equal = equal and diff <= 1e-9 * max(1.0, abs(float(x)))  # type: ignore[arg-type]
            continue
        labels += 1
        if x == y and type(x) is type(y):
            labels_equal += 1
        else:
            equal = False
    return AnswerComparison(equal, labels, labels_equal, numbers, diff_sum, diff_max)


# --- batch driver (mlendpoints-batch) ------------------------------------------
# Layout of a batch job's output folder: the operator reads the status objects
# (small JSON, one per instance) to follow progress without reading the data.
BATCH_PARTS_DIR = "_parts"  # committed mini-batch parts, the job plan and per-instance status
BATCH_SUMMARY_FILE = "summary.json"  # written last: its presence marks a finished job
BATCH_ERRORS_FILE = "errors.jsonl"  # one line per failed item
BATCH_DEFAULT_OUTPUT_FILE = "predictions.csv"
BatchOutputFormat = Literal["csv", "parquet", "jsonl"]
BATCH_OUTPUT_FORMATS: Final = ("csv", "parquet", "jsonl")
ENV_JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes in Indexed Job pods


def batch_rows_name(output_file_name: str, output_format: str, partition: bool) -> str:
    """Where the rows go, relative to the output folder: the rows file, or with `partition` the
    folder of one file per input. The default name follows the format (`predictions.parquet`); a
    partitioned output's folder is the name without its extension (`predictions/`)."""
    name = output_file_name
    if name == BATCH_DEFAULT_OUTPUT_FILE and output_format != "csv":
        name = f"predictions.{output_format}"
    return posixpath.splitext(name)[0] if partition else name


def batch_partition_name(input_name: str, output_format: str) -> str:
    """A partitioned output file's path inside the rows folder: the input's relative path with the
    format's extension instead of its own (`sub/a.csv` -> `sub/a.parquet`)."""
    return f"{posixpath.splitext(input_name)[0]}.{output_format}"


def batch_status_path(instance_index: int) -> str:
    """Path, relative to the output folder, of one instance's status object."""
    return f"{BATCH_PARTS_DIR}/status-{instance_index}.json"


# Live progress in a cluster: each scoring instance patches its BatchStatus JSON into one key of a
# ConfigMap the operator made for the job (and that the instance's ServiceAccount may get and patch,
# nothing else); the operator adds them up into the BatchJob's status. No data file is read.
BATCH_PROGRESS_INTERVAL_S = 5.0  # at most this often per instance; the issue asks for 10 s or better


def batch_progress_configmap(job: str) -> str:
    return f"{job}-progress"


BATCH_PROGRESS_KEY_PREFIX = "instance-"  # + the instance's index: one key per instance


def batch_progress_key(instance_index: int) -> str:
    return f"{BATCH_PROGRESS_KEY_PREFIX}{instance_index}"


class BatchCounts(BaseModel):
    total: int = 0
    succeeded: int = 0
    failed: int = 0


class BatchStatus(BaseModel):
    """Progress of one driver instance (its status object), or of the whole job (summary.json)."""

    phase: Literal["Running", "Succeeded", "Failed"]
    reason: str | None = Field(default=None, description="On failure, e.g. ErrorThresholdExceeded.")
    message: str | None = None
    instance: int | None = Field(default=None, description="None in summary.json (the whole job).")
    miniBatches: BatchCounts = Field(default_factory=BatchCounts)
    items: BatchCounts = Field(default_factory=BatchCounts)
    rows: int = Field(default=0, description="Rows written to the output file (appendRow).")
    output: str | None = Field(default=None, description="URI of the output file, once merged.")
    startedAt: float | None = None
    updatedAt: float | None = None
    seconds: float | None = Field(default=None, description="Wall time from the job's start to this update.")


# --- failures ------------------------------------------------------------------
# Every entry point reports a fatal error as one line, `<component> failed: <reason>`, on stderr
# and in the termination log (mlendpoints_serving.runtime.fatal writes it).
FAILED = " failed: "
BATCH_DRIVER = "mlendpoints-batch"  # the batch driver's component name in its failure line


def failure_line(component: str, reason: str) -> str:
    return f"{component}{FAILED}{reason}"


class BatchFailure(enum.StrEnum):
    """Why the batch driver failed: the `<Reason>` of `mlendpoints-batch failed: <Reason>: <message>`.

    The one list of reasons: the driver raises them, the operator and the CLI parse them back with
    `parse_failure`. Adding one is one line here (and its row in docs/contract.md).
    """

    InvalidSettings = "InvalidSettings"
    InputNotFound = "InputNotFound"
    OutputExists = "OutputExists"
    WorkerInitFailed = "WorkerInitFailed"  # model load or the scoring script's init() failed
    ErrorThresholdExceeded = "ErrorThresholdExceeded"
    NothingToMerge = "NothingToMerge"
    PartsMissing = "PartsMissing"
    OutputColumnsDiffer = "OutputColumnsDiffer"
    # A rerun into a finished job's output whose summary.json records a failure with no known reason.
    Failed = "Failed"

    @property
    def final(self) -> bool:
        """A retry of the pod cannot fix it: the operator fails the job at once.

        PartsMissing is not final (another instance's share may still commit); nor is an unknown
        recorded failure.
        """
        return self not in (BatchFailure.PartsMissing, BatchFailure.Failed)


@dataclass(frozen=True)
class ParsedFailure:
    reason: BatchFailure
    message: str

    @property
    def detail(self) -> str:
        """`<Reason>: <message>`, the line without its component prefix."""
        return f"{self.reason}: {self.message}"


def format_failure(reason: BatchFailure, message: str) -> str:
    """The batch driver's failure line."""
    return failure_line(BATCH_DRIVER, f"{reason}: {message}")


def parse_failure(line: str) -> ParsedFailure | None:
    """The reason and message of a batch driver's failure line; None for any other text (another
    component's line, a crash without one, a reason this version does not know)."""
    prefix = f"{BATCH_DRIVER}{FAILED}"
    line = line.strip()
    if not line.startswith(prefix):
        return None
    reason, _, message = line[len(prefix) :].partition(":")
    try:
        return ParsedFailure(BatchFailure(reason), message.strip())
    except ValueError:
        return None
