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
import posixpath
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# --- ports -------------------------------------------------------------------
SERVER_PORT = 5001  # mlendpoints-serve inside a deployment pod (Azure's inference server port)
ROUTER_PORT = 8080  # mlendpoints-router inside a router pod; the endpoint Service maps 80 -> 8080

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

# --- environment variables ---------------------------------------------------
ENV_MODEL_DIR = "MLENDPOINTS_MODEL_DIR"  # set for scoring scripts, as AZUREML_MODEL_DIR
ENV_AZUREML_MODEL_DIR = "AZUREML_MODEL_DIR"
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


class RouterConfig(BaseModel):
    """The router's config file (file mode) or the `router.json` key of its ConfigMap (cluster mode)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    namespace: str | None = None
    authMode: Literal["key", "none"] = "key"
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
