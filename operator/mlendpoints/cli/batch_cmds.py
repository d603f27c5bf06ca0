"""`mlendpoints batch ...`: score many files with an MLflow model, in the cluster or on this machine.

`invoke` creates a BatchJob and follows its status until it finishes; `run` runs the
same driver (`mlendpoints-batch`) here. Both take the job's settings the same way
(flags, `--set` with BatchJob override names) and `run` gets them turned into the
driver's flags by the renderer the operator uses (`settings_args`), with the API's
defaults. The control plane starts the data plane's tools as processes and never
imports them (only their contract).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import click
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from mlendpoints.api.batch import BatchDeploymentSpec, BatchJobSpec, JobOverrides
from mlendpoints.api.kinds import BATCH_DEPLOYMENT, BATCH_ENDPOINT, BATCH_JOB
from mlendpoints.cli.app_state import cluster_options
from mlendpoints.cli.cluster_cmds import cluster_of
from mlendpoints.client import Cluster
from mlendpoints.errors import UserError
from mlendpoints.local import manifests
from mlendpoints.local.progress import directory_bytes
from mlendpoints.render.batch import LABEL_BATCH_JOB, PVC_SCHEME, JobSettings, settings_args
from mlendpoints_serving.contract import (
    BATCH_DRIVER,
    BATCH_ERRORS_FILE,
    BATCH_OUTPUT_FORMATS,
    ENV_TERMINATION_LOG,
    FLAG_AZUREML_MODEL_DIR,
    BatchFailure,
    BatchStatus,
    failure_line,
    parse_failure,
)

F = TypeVar("F", bound=Callable[..., Any])

console = Console(soft_wrap=True)  # progress lines stay whole in logs and pipes
POLL_S = 1.0
FINISHED = ("Succeeded", "Failed")
LOCAL_ENDPOINT = "local"  # `batch run` has no endpoint, but the API models it is checked by name one
# What to do about a failure of the driver, by its reason (docs/contract.md, batch driver).
FAILURE_HINTS = {
    BatchFailure.OutputExists: "the output folder holds another job's results: pass a new --output folder",
    BatchFailure.InputNotFound: "check --input (and --input-type uriFile for a single file)",
    BatchFailure.InvalidSettings: "fix the setting named above",
    BatchFailure.WorkerInitFailed: "the model (or the scoring script's init()) failed to load: "
    "see the log above",
}
INPUT_TYPES = click.Choice(["uriFolder", "uriFile"])


# --- the job's settings, shared by both commands ------------------------------------------------
def setting_options(command: F) -> F:
    """The settings a job may override: common ones as flags, any of them with --set."""
    for decorator in (
        click.option(
            "--set", "sets", multiple=True, metavar="KEY=VALUE",
            help="Any BatchJob override by its field name, dotted when nested (repeatable): "
            "errorThreshold=5, retrySettings.maxRetries=2, retrySettings.timeout=120, "
            "outputFileName=scores.csv, outputHeader=false (Azure's header-less csv), loggingLevel=debug.",
        ),
        click.option(
            "--partition-outputs", is_flag=True, default=None,
            help="One rows file per input file (its relative path) instead of one rows file.",
        ),
        click.option(
            "--output-format", type=click.Choice(list(BATCH_OUTPUT_FORMATS)),
            help="Rows file format (default csv, Azure's predictions.csv).",
        ),
        click.option(
            "--output-action", type=click.Choice(["appendRow", "summaryOnly"]),
            help="appendRow: write the predictions file; summaryOnly: only summary.json and errors.jsonl.",
        ),
        click.option(
            "--max-concurrency", type=click.IntRange(min=1),
            help="Worker processes per instance (default: the deployment's; 1 for `run`).",
        ),
        click.option(
            "--mini-batch-size", type=click.IntRange(min=1),
            help="Files per mini-batch (default: the deployment's; 10 for `run`).",
        ),
    ):  # fmt: skip
        command = decorator(command)
    return command


def parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs as a nested dict: dotted keys for nested fields, values read as YAML scalars."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(
                f"--set {pair!r}: expected KEY=VALUE",
                "e.g. --set errorThreshold=5 --set retrySettings.maxRetries=2",
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part} is set to a value and cannot have fields", None)
        node[leaf] = value
    return values


def job_overrides(
    mini_batch_size: int | None,
    max_concurrency: int | None,
    output_action: str | None,
    sets: tuple[str, ...],
    output_format: str | None = None,
    partition_outputs: bool | None = None,
) -> JobOverrides:
    """The job's overrides: the flags, then `--set` (BatchJob `spec.overrides` field names)."""
    flags = {
        "miniBatchSize": mini_batch_size,
        "maxConcurrencyPerInstance": max_concurrency,
        "outputAction": output_action,
        "outputFormat": output_format,
        "partitionOutputs": partition_outputs or None,
    }
    values = {**{k: v for k, v in flags.items() if v is not None}, **parse_sets(sets)}
    try:
        return JobOverrides.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        problem = "no such setting" if err["type"] == "extra_forbidden" else err["msg"]
        raise UserError(
            f"--set {field}: {problem}",
            f"settable: {', '.join(JobOverrides.model_fields)} (retrySettings.maxRetries, "
            "retrySettings.timeout)",
        ) from exc


# --- batch run: the driver on this machine ---------------------------------------------------------
def tool(name: str) -> str:
    """A console script of this installation (next to this Python first, else on PATH)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise UserError(f"{name} is not installed", "install mlendpoints in this environment (pip install .)")
    return found


def local_model(uri: str) -> Path:
    """An MLflow model directory: the path itself, or the URI fetched into the local model cache."""
    if not urlparse(uri).scheme:
        path = Path(uri)
        if not path.is_dir():
            raise UserError(
                f"no model directory {uri}",
                "pass an MLflow model directory or a URI (models:/NAME/VERSION, runs:/..., s3://...)",
            )
        return path
    # Imported here: resolving and the local cache are only needed for a URI.
    from mlendpoints.local.models import fetch_model, pin

    pinned = pin(uri)
    label = f"fetching {pinned}"
    with console.status(label) as status:
        dest = fetch_model(
            pinned,
            tool("mlendpoints-fetch"),
            on_wait=lambda dest: status.update(f"{label} ({directory_bytes(dest) / 1e6:.1f} MB)"),
        )
    console.print(f"model {pinned} in {dest}", style="dim")
    return dest


def run_argv(
    model_dir: Path,
    input_uri: str,
    input_type: str,
    output_uri: str,
    settings: JobSettings,
    scoring_script: Path | None,
    azureml_model_dir: Path | None = None,
) -> list[str]:
    """The driver's command line: one instance that scores and merges (`--phase all`)."""
    argv = [
        tool(BATCH_DRIVER), "--model-dir", str(model_dir),
        "--input", input_uri, "--input-type", input_type, "--output", output_uri,
        *settings_args(settings), "--phase", "all",
    ]  # fmt: skip
    if scoring_script is not None:
        argv += ["--scoring-script", str(scoring_script)]
    if azureml_model_dir is not None:
        argv += [FLAG_AZUREML_MODEL_DIR, str(azureml_model_dir)]
    return argv


def _link_or_copy(source: str, target: str) -> object:
    try:
        os.link(source, target)  # the same bytes, no copy (hard links: MLflow refuses symlinked models)
    except OSError:
        shutil.copy2(source, target)  # another filesystem
    return target


def azureml_layout(model_dir: Path, folder: str | None, work: Path) -> tuple[Path, Path | None]:
    """(the model's folder, AZUREML_MODEL_DIR) for a script that reads AZUREML_MODEL_DIR/<folder>, as the
    cluster's pods lay it out (codeConfiguration.modelFolder); (model_dir, None) without a folder."""
    if folder is None:
        return model_dir, None
    if model_dir.name == folder:
        return model_dir, model_dir.parent
    staged = work / "azureml-model" / folder
    shutil.copytree(model_dir, staged, copy_function=_link_or_copy)
    return staged, staged.parent


@dataclass(frozen=True)
class RunPlan:
    """What `batch run` runs: from the flags, or from a BatchDeployment file (mlendpoints or Azure YAML)."""

    deployment: BatchDeploymentSpec
    scoring_script: Path | None
    env: dict[str, str]


def run_plan(
    files: tuple[Path, ...],
    deployment_name: str | None,
    model: str | None,
    scoring_script: Path | None,
    work: Path,
) -> RunPlan:
    """The deployment to run: the one in `files` (its model, script and settings), flags winning."""
    if not files:
        if deployment_name is not None:
            raise UserError("--deployment picks a BatchDeployment of the -f files", "pass its file with -f")
        if model is None:
            raise UserError("batch run needs a model", "pass --model, or a BatchDeployment file with -f")
        return RunPlan(BatchDeploymentSpec(endpointName=LOCAL_ENDPOINT, model=model), scoring_script, {})
    loaded = manifests.load(files)
    for manifest in loaded:
        for finding in manifest.findings:
            console.print(f"[yellow]warning:[/] {escape(finding.line())}", highlight=False)
    chosen = manifests.select_batch_deployment(loaded, deployment_name)
    spec = chosen.spec if model is None else chosen.spec.model_copy(update={"model": model})
    console.print(f"batch deployment [bold]{chosen.name}[/], model {escape(spec.model)}", highlight=False)
    if scoring_script is None and spec.codeConfiguration is not None:
        code = work / "code"
        code.mkdir()
        for name, content in chosen.code_files().items():
            (code / name).write_bytes(content)
        scoring_script = code / spec.codeConfiguration.scoringScript
    env: dict[str, str] = {}
    for var in spec.env:
        if var.value is None:
            raise UserError(
                f"batch deployment {chosen.name!r}: env {var.name}: valueFrom is read in the cluster only",
                "set the variable in this shell instead; batch run passes its environment on",
            )
        env[var.name] = var.value
    return RunPlan(spec, scoring_script, env)


def driver_failure(message: str, output_uri: str, code: int) -> UserError:
    """The driver's `mlendpoints-batch failed: <Reason>: <message>` as one error line and a hint."""
    failure = parse_failure(message)
    if failure is None:
        # A newer driver's reason this CLI does not know: still its own words, with no hint.
        prefix = failure_line(BATCH_DRIVER, "")
        if message.strip().startswith(prefix):
            return UserError(f"the batch job failed: {message.strip().removeprefix(prefix)}", None)
        return UserError(f"{BATCH_DRIVER} exited with code {code}", "its log above says why")
    hint = FAILURE_HINTS.get(failure.reason)
    if failure.reason is BatchFailure.ErrorThresholdExceeded:
        hint = f"every failed item and why: {output_uri.rstrip('/')}/{BATCH_ERRORS_FILE}"
    return UserError(f"the batch job failed: {failure.detail}", hint)


def outcome_line(items: dict[str, Any], mini_batches: dict[str, Any]) -> str:
    return (
        f"{items.get('succeeded', 0)} of {items.get('total', 0)} items scored, {items.get('failed', 0)} "
        f"failed, in {mini_batches.get('total', 0)} mini-batches"
    )


def _summary(status: BatchStatus, output_uri: str) -> None:
    took = f" ({status.seconds:.1f}s)" if status.seconds is not None else ""
    console.print(
        f"[bold green]{status.phase}[/]: "
        f"{outcome_line(status.items.model_dump(), status.miniBatches.model_dump())}{took}",
        highlight=False,
    )
    console.print(f"  output: {escape(status.output or output_uri)}", highlight=False)
    if status.items.failed:
        console.print(
            f"  failed items: {escape(output_uri.rstrip('/'))}/{BATCH_ERRORS_FILE}", highlight=False
        )


# --- batch invoke: a BatchJob in the cluster ------------------------------------------------------
def progress_line(status: dict[str, Any]) -> str:
    """Phase, mini-batch and item counts, and why, as one line (what BatchJob.status says)."""
    parts = [status.get("phase") or "Pending"]
    mini, items = status.get("miniBatches") or {}, status.get("items") or {}
    if mini.get("total"):
        done = mini.get("succeeded", 0) + mini.get("failed", 0)
        parts.append(f"mini-batches {done}/{mini['total']}")
    if items.get("total"):
        parts.append(
            f"items {items.get('succeeded', 0)} succeeded, {items.get('failed', 0)} failed "
            f"of {items['total']}"
        )
    line = ", ".join(parts)
    return f"{line}: {status['message']}" if status.get("message") else line


def failure_message(status: dict[str, Any]) -> str:
    """Why a job failed: its Complete condition's message, else its status message."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Complete" and cond.get("status") == "False" and cond.get("message"):
            return str(cond["message"])
    return str(status.get("message") or "no reason recorded")


def follow(cluster: Cluster, name: str, poll_s: float = POLL_S) -> dict[str, Any]:
    """Print each change of the job's progress until it finishes; its final status."""
    started, last = time.monotonic(), ""
    with console.status(f"batchjob {name}: Pending") as spinner:
        while True:
            status = cluster.get(BATCH_JOB, name).get("status") or {}
            line = progress_line(status)
            if line != last:
                console.print(f"[dim]{time.monotonic() - started:6.0f}s[/] {escape(line)}", highlight=False)
                spinner.update(f"batchjob {name}: {escape(line)}")
                last = line
            if status.get("phase") in FINISHED:
                return status
            time.sleep(poll_s)


def follow_bar(cluster: Cluster, name: str, poll_s: float = POLL_S) -> dict[str, Any]:
    """`--stream`: a progress bar of the job's mini-batches as the operator records them (it follows
    the BatchJob's status.miniBatches while the job runs), its phase and items beside it; each new
    message printed above it. Its final status."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("batchjob {task.fields[job]} [bold]{task.fields[phase]}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("mini-batches, {task.fields[items]}"),
        TimeElapsedColumn(),
    )
    last_message = None
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=None, job=name, phase="Pending", items="")
        while True:
            status = cluster.get(BATCH_JOB, name).get("status") or {}
            mini, items = status.get("miniBatches") or {}, status.get("items") or {}
            item_text = (
                f"items {items.get('succeeded', 0)} ok, {items.get('failed', 0)} failed of {items['total']}"
                if items.get("total")
                else "items -"
            )
            bar.update(
                task,
                total=mini.get("total") or None,
                completed=mini.get("succeeded", 0) + mini.get("failed", 0),
                phase=status.get("phase") or "Pending",
                items=item_text,
            )
            if status.get("message") and status["message"] != last_message:
                bar.console.print(f"[dim]{escape(status['message'])}[/]", highlight=False)
                last_message = status["message"]
            if status.get("phase") in FINISHED:
                return status
            time.sleep(poll_s)


def _target_deployment(cluster: Cluster, endpoint: str, deployment: str | None) -> str:
    """The deployment the job will run, checked before anything is created."""
    spec = cluster.get(BATCH_ENDPOINT, endpoint).get("spec") or {}
    name = deployment or spec.get("defaultDeployment")
    if not name:
        raise UserError(
            f"batch endpoint {endpoint} has no defaultDeployment", "name the deployment with --deployment"
        )
    owner = (cluster.get(BATCH_DEPLOYMENT, name).get("spec") or {}).get("endpointName")
    if owner != endpoint:
        raise UserError(
            f"batch deployment {name} belongs to endpoint {owner}, not {endpoint}",
            f"kubectl -n {cluster.namespace} get batchdeployments lists them",
        )
    return str(name)


# --- the commands ---------------------------------------------------------------------------------
@click.group()
def batch() -> None:
    """Score many files with an MLflow model: a BatchJob in the cluster, or the same driver here.

    \b
    Example:
      mlendpoints batch run --model build/iris-batch/model --input build/iris-batch/input --output out/
      mlendpoints batch invoke iris-batch --input pvc://iris-data/input --output pvc://iris-results/run-1
    """


@batch.command()
@cluster_options
@click.argument("endpoint")
@click.option(
    "--input",
    "-i",
    "input_uri",
    required=True,
    help="What to score: pvc://CLAIM/PATH, s3://, gs://, abfss:// or https://, as the pods see it.",
)
@click.option(
    "--output",
    "-o",
    "output_uri",
    required=True,
    help="Output folder: pvc://CLAIM/PATH, s3://, gs:// or abfss://; never overwritten.",
)
@click.option(
    "--input-type",
    type=INPUT_TYPES,
    default="uriFolder",
    show_default=True,
    help="A folder (nested folders walked) or a single file.",
)
@click.option("--deployment", "-d", help="The BatchDeployment to run (default: the endpoint's default).")
@click.option("--name", help="The BatchJob's name (default: ENDPOINT- and a random suffix).")
@setting_options
@click.option("--no-wait", is_flag=True, help="Return once the BatchJob is created.")
@click.option(
    "--stream",
    is_flag=True,
    help="Show a progress bar of the job's mini-batches instead of a line per change.",
)
@click.pass_context
def invoke(
    ctx: click.Context,
    endpoint: str,
    input_uri: str,
    output_uri: str,
    input_type: str,
    deployment: str | None,
    name: str | None,
    mini_batch_size: int | None,
    max_concurrency: int | None,
    output_action: str | None,
    output_format: str | None,
    partition_outputs: bool | None,
    sets: tuple[str, ...],
    no_wait: bool,
    stream: bool,
) -> None:
    """Start a batch job on a batch endpoint (a BatchJob) and follow it until it finishes.

    Shows the job's phase and its mini-batch and item counts as the operator records them;
    exits non-zero when the job fails, with the reason. Ctrl-C stops following, not the job.

    \b
    Example:
      mlendpoints batch invoke iris-batch --input pvc://iris-data/input --output pvc://iris-results/run-1
      mlendpoints batch invoke iris-batch -i s3://bucket/in/ -o s3://bucket/out/run-2 -d logreg \\
          --mini-batch-size 5 --set errorThreshold=10 --set retrySettings.maxRetries=1 --no-wait
    """
    overrides = job_overrides(
        mini_batch_size, max_concurrency, output_action, sets, output_format, partition_outputs
    )
    spec = BatchJobSpec.model_validate(
        {
            "endpointName": endpoint,
            "deploymentName": deployment,
            "input": {"uri": input_uri, "type": input_type},
            "output": {"uri": output_uri},
            "overrides": overrides,
        }
    )
    cluster = cluster_of(ctx)
    ns = cluster.namespace
    target = _target_deployment(cluster, endpoint, deployment)
    spec_body = spec.model_dump(exclude_none=True)
    created = cluster.create(BATCH_JOB, name, spec_body, generate_name=f"{endpoint}-")
    job = created["metadata"]["name"]
    console.print(f"batchjob [bold]{job}[/] created in namespace {ns} (deployment {target})", highlight=False)
    watch = f"kubectl -n {ns} get batchjob {job} -w"
    if no_wait:
        console.print(f"follow it with: {watch}", highlight=False)
        return
    try:
        status = follow_bar(cluster, job) if stream else follow(cluster, job)
    except KeyboardInterrupt:
        console.print(f"\nstopped following; the job goes on: {watch}", highlight=False)
        raise click.exceptions.Exit(130) from None
    if status.get("phase") == "Failed":
        raise UserError(
            f"batch job {job} failed: {failure_message(status)}",
            f"its pods' logs: kubectl -n {ns} logs -l {LABEL_BATCH_JOB}={job} --all-containers",
        )
    counts = outcome_line(status.get("items") or {}, status.get("miniBatches") or {})
    console.print(f"[bold green]Succeeded[/]: {counts}", highlight=False)
    console.print(f"  output: {escape(status.get('outputUri') or output_uri)}", highlight=False)


@batch.command()
@click.option(
    "--model",
    "-m",
    help="MLflow model directory, or a URI mlendpoints-fetch takes (models:/, runs:/, s3://, ...); "
    "default: the -f deployment's.",
)
@click.option(
    "--file",
    "-f",
    "files",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A BatchDeployment to run, with its ConfigMaps: mlendpoints YAML, or Azure's modelBatchDeployment "
    "YAML as it is (repeatable; a folder reads its .yaml files). Its model, scoring script, settings "
    "and env are used; the flags override them.",
)
@click.option(
    "--deployment", "-d", "deployment_name", help="The -f files' BatchDeployment to run, if several."
)
@click.option(
    "--input",
    "-i",
    "input_uri",
    required=True,
    help="What to score: a local folder or file, s3://, gs://, abfss:// or https://.",
)
@click.option(
    "--output",
    "-o",
    "output_uri",
    required=True,
    help="Output folder: local, s3://, gs:// or abfss://; never overwritten (a rerun resumes).",
)
@click.option(
    "--input-type",
    type=INPUT_TYPES,
    help="A folder or a single file (default: uriFile for a local file, else uriFolder).",
)
@click.option(
    "--scoring-script",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Python file with init() and run(mini_batch) (Azure's batch contract).",
)
@setting_options
def run(
    model: str | None,
    files: tuple[Path, ...],
    deployment_name: str | None,
    input_uri: str,
    output_uri: str,
    input_type: str | None,
    scoring_script: Path | None,
    mini_batch_size: int | None,
    max_concurrency: int | None,
    output_action: str | None,
    output_format: str | None,
    partition_outputs: bool | None,
    sets: tuple[str, ...],
) -> None:
    """Run a batch job on this machine, without a cluster: the driver the cluster's Jobs run.

    Same settings and defaults as a BatchJob; exactly once and resumable: run it again after
    an interruption and it goes on from the committed mini-batches.

    \b
    Example:
      mlendpoints batch run --model build/iris-batch/model --input build/iris-batch/input \\
          --output build/iris-batch/out --mini-batch-size 2 --max-concurrency 2
      mlendpoints batch run -m models:/iris/1 -i data/ -o out/ --set errorThreshold=0
      mlendpoints batch run -f endpoint.yml -f deployment.yml -i data/ -o out/   # Azure's YAML as it is
    """
    overrides = job_overrides(
        mini_batch_size, max_concurrency, output_action, sets, output_format, partition_outputs
    )
    if (overrides.instanceCount or 1) > 1:
        raise UserError(
            "batch run scores with one instance",
            "use --max-concurrency for parallel workers here; instances are pods, in the cluster",
        )
    for flag, uri in (("--input", input_uri), ("--output", output_uri)):
        if uri.startswith(PVC_SCHEME):
            raise UserError(f"{flag} {uri}: a PVC exists only in the cluster", "pass a local path or a URI")
    input_type = input_type or ("uriFile" if Path(input_uri).is_file() else "uriFolder")
    with tempfile.TemporaryDirectory(prefix="mlendpoints-batch-") as tmp:
        work = Path(tmp)
        plan = run_plan(files, deployment_name, model, scoring_script, work)
        if plan.deployment.resources.instanceCount > 1 and overrides.instanceCount is None:
            console.print(
                f"the deployment's {plan.deployment.resources.instanceCount} instances run as one here "
                "(--max-concurrency sets its workers)",
                style="dim",
            )
            overrides = overrides.model_copy(update={"instanceCount": 1})
        job = BatchJobSpec.model_validate(
            {
                "endpointName": LOCAL_ENDPOINT,
                "input": {"uri": input_uri, "type": input_type},
                "output": {"uri": output_uri},
                "overrides": overrides,
            }
        )
        settings = JobSettings.of(job, plan.deployment)
        code_config = plan.deployment.codeConfiguration
        model_dir, azureml_model_dir = azureml_layout(
            local_model(plan.deployment.model),
            code_config.modelFolder if code_config is not None else None,
            work,
        )
        argv = run_argv(
            model_dir, input_uri, input_type, output_uri, settings, plan.scoring_script, azureml_model_dir
        )
        termination_log = work / "termination-log"
        try:
            # The driver inherits the terminal: its progress bar and log lines show as they come.
            code = subprocess.run(
                argv, env={**os.environ, **plan.env, ENV_TERMINATION_LOG: str(termination_log)}
            ).returncode
        except KeyboardInterrupt:
            console.print(
                "\ninterrupted; the committed mini-batches are kept: run the same command to resume"
            )
            raise
        message = termination_log.read_text() if termination_log.exists() else ""
    if code != 0:
        raise driver_failure(message, output_uri, code)
    _summary(BatchStatus.model_validate_json(message), output_uri)
