"""BatchEndpoint, BatchDeployment and BatchJob: asynchronous scoring of many files (as Azure ML batch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlendpoints.api import cel, uris
from mlendpoints.api.common import (
    DNS_LABEL,
    NAME_MAX,
    ApiModel,
    CodeConfiguration,
    Condition,
    EnvVar,
    Quantity,
    Toleration,
    nested,
)
from mlendpoints.api.online import Resource

OutputAction = Literal["appendRow", "summaryOnly"]
OutputFormat = Literal["csv", "parquet", "jsonl"]
LoggingLevel = Literal["debug", "info", "warning", "error"]
JobPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class BatchEndpointSpec(ApiModel):
    """Desired state of a batch endpoint."""

    defaultDeployment: str | None = Field(
        default=None, description="BatchDeployment a job uses when it names none.", pattern=DNS_LABEL
    )
    description: str | None = Field(default=None, description="Free text.")


class BatchEndpointStatus(ApiModel):
    """Observed state of a batch endpoint."""

    conditions: list[Condition] = Field(default_factory=list, description="Ready.")
    observedGeneration: int | None = Field(default=None, description="Generation last reconciled.")


class BatchResources(ApiModel):
    """Pods of a job and the resources of each."""

    instanceCount: int = Field(default=1, ge=1, description="Pods that score in parallel.")
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Minimum resources per pod.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum resources per pod.")


class RetrySettings(ApiModel):
    """Retries of a failing or slow mini-batch."""

    maxRetries: int = Field(
        default=3, ge=0, description="Retries of a mini-batch before its items count as failed."
    )
    timeout: int = Field(default=30, ge=1, description="Seconds a mini-batch may take.")


class BatchSettings(ApiModel):
    """How files are scored (Azure's batch deployment settings)."""

    maxConcurrencyPerInstance: int = Field(default=1, ge=1, description="Worker processes per pod.")
    miniBatchSize: int = Field(default=10, ge=1, description="Files per mini-batch.")
    outputAction: OutputAction = Field(
        default="appendRow", description="appendRow: write predictions; summaryOnly: only the summary."
    )
    outputFileName: str = Field(default="predictions.csv", min_length=1, description="Predictions file name.")
    outputFormat: OutputFormat = Field(
        default="csv",
        description="Rows file format: csv (Azure's predictions.csv layout), parquet or jsonl; the default "
        "file name follows it (predictions.parquet).",
    )
    outputHeader: bool = Field(
        default=True,
        description="csv: a header line naming the columns first (row, prediction..., file_name); false: "
        "rows only, as Azure's predictions.csv (mlendpoints import azureml sets false).",
    )
    partitionOutputs: bool = Field(
        default=False,
        description="One rows file per input file, at the input's relative path with the format's "
        "extension, in a folder named after the output file (predictions/), instead of one file.",
    )
    retrySettings: RetrySettings = nested(RetrySettings, "Mini-batch retries.")
    errorThreshold: int = Field(
        default=-1,
        ge=-1,
        description="Failed items tolerated before the job fails; -1: never fail for items.",
    )
    loggingLevel: LoggingLevel = Field(default="info", description="Driver log level.")


class BatchDeploymentSpec(ApiModel):
    """Desired state of a batch deployment: a model and how jobs run it."""

    endpointName: str = Field(
        description="The BatchEndpoint (same namespace).", pattern=DNS_LABEL, max_length=NAME_MAX
    )
    model: str = Field(
        min_length=1,
        max_length=uris.MODEL_URI_MAX,
        description="Model URI, as mlendpoints-fetch accepts.",
        json_schema_extra=cel.validations(cel.MODEL_URI),
    )
    codeConfiguration: CodeConfiguration | None = Field(default=None, description="Custom scoring script.")
    image: str | None = Field(default=None, description="Container image; default: the serving image.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables for the driver.")
    resources: BatchResources = nested(BatchResources, "Pods and their resources.")
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods need.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    settings: BatchSettings = nested(BatchSettings, "Scoring settings.")


class BatchDeploymentStatus(ApiModel):
    """Observed state of a batch deployment."""

    conditions: list[Condition] = Field(default_factory=list, description="Ready.")
    observedGeneration: int | None = Field(default=None, description="Generation last reconciled.")


class JobInput(ApiModel):
    """What to score."""

    uri: str = Field(min_length=1, description="Local/PVC path, s3://, gs://, abfss:// or https://.")
    type: Literal["uriFolder", "uriFile"] = Field(
        default="uriFolder", description="A folder or a single file."
    )


class JobOutput(ApiModel):
    """Where results go; an existing output is never overwritten."""

    uri: str = Field(min_length=1, description="Local/PVC path, s3://, gs:// or abfss:// folder.")


class RetryOverrides(ApiModel):
    """Overrides of the deployment's retry settings."""

    maxRetries: int | None = Field(default=None, ge=0, description="Retries of a mini-batch.")
    timeout: int | None = Field(default=None, ge=1, description="Seconds a mini-batch may take.")


class JobOverrides(ApiModel):
    """Per-job overrides of the deployment's settings; unset fields keep the deployment's."""

    instanceCount: int | None = Field(default=None, ge=1, description="Pods that score in parallel.")
    maxConcurrencyPerInstance: int | None = Field(default=None, ge=1, description="Worker processes per pod.")
    miniBatchSize: int | None = Field(default=None, ge=1, description="Files per mini-batch.")
    outputAction: OutputAction | None = Field(default=None, description="appendRow or summaryOnly.")
    outputFileName: str | None = Field(default=None, min_length=1, description="Predictions file name.")
    outputFormat: OutputFormat | None = Field(default=None, description="csv, parquet or jsonl.")
    outputHeader: bool | None = Field(default=None, description="csv: a header line first.")
    partitionOutputs: bool | None = Field(default=None, description="One rows file per input file.")
    retrySettings: RetryOverrides | None = Field(default=None, description="Mini-batch retries.")
    errorThreshold: int | None = Field(
        default=None, ge=-1, description="Failed items tolerated; -1: never fail."
    )
    loggingLevel: LoggingLevel | None = Field(default=None, description="Driver log level.")


class BatchJobSpec(ApiModel):
    """Desired state of a batch job: score this input into that output."""

    endpointName: str = Field(
        description="The BatchEndpoint (same namespace).", pattern=DNS_LABEL, max_length=NAME_MAX
    )
    deploymentName: str | None = Field(
        default=None, description="BatchDeployment to run; default: the endpoint's defaultDeployment."
    )
    input: JobInput = Field(description="What to score.")
    output: JobOutput = Field(description="Where the results go.")
    overrides: JobOverrides = nested(JobOverrides, "Overrides of the deployment's settings.")


class Counts(ApiModel):
    """Totals of one kind of unit."""

    total: int = Field(default=0, ge=0, description="All units.")
    succeeded: int = Field(default=0, ge=0, description="Units that succeeded.")
    failed: int = Field(default=0, ge=0, description="Units that failed.")


class BatchJobStatus(ApiModel):
    """Observed state of a batch job."""

    phase: JobPhase | None = Field(default=None, description="Pending, Running, Succeeded or Failed.")
    miniBatches: Counts = nested(Counts, "Mini-batch counts.")
    items: Counts = nested(Counts, "Item (file) counts.")
    progress: str | None = Field(
        default=None, description="Mini-batches finished of all, e.g. '12/40 (30%)'; updated while it runs."
    )
    outputUri: str | None = Field(default=None, description="Where the results are.")
    startTime: str | None = Field(
        default=None, description="When it started.", json_schema_extra={"format": "date-time"}
    )
    completionTime: str | None = Field(
        default=None, description="When it finished.", json_schema_extra={"format": "date-time"}
    )
    conditions: list[Condition] = Field(default_factory=list, description="Conditions of the job.")
    message: str | None = Field(default=None, description="Why it is in this phase.")
    observedGeneration: int | None = Field(default=None, description="Generation last reconciled.")


class BatchEndpoint(Resource):
    """A named entry point for batch jobs, with a default deployment."""

    spec: BatchEndpointSpec = nested(BatchEndpointSpec, "Desired state.")
    status: BatchEndpointStatus = Field(default_factory=BatchEndpointStatus, description="Observed state.")


class BatchDeployment(Resource):
    """A model and the way jobs run it."""

    spec: BatchDeploymentSpec = Field(description="Desired state.")
    status: BatchDeploymentStatus = Field(
        default_factory=BatchDeploymentStatus, description="Observed state."
    )


class BatchJob(Resource):
    """One scoring run of a batch deployment over an input."""

    spec: BatchJobSpec = Field(description="Desired state.")
    status: BatchJobStatus = Field(default_factory=BatchJobStatus, description="Observed state.")
