"""`mlendpoints import azureml FILE...`: Azure ML CLI v2 YAML in, mlendpoints YAML out."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from mlendpoints.azureml import Imported, ImportOptions, azure_check, import_files, to_yaml
from mlendpoints.azureml.upload import check_destination
from mlendpoints.errors import UserError
from mlendpoints.operator.settings import PUBLIC_SERVING_IMAGE

stderr = Console(stderr=True)


@click.group(name="import")
def import_group() -> None:
    """Turn other platforms' endpoint files into mlendpoints resources.

    \b
    Example:
      mlendpoints import azureml endpoint.yml blue-deployment.yml -o k8s/
      mlendpoints import azureml blue-deployment.yml --upload-to s3://models/imported
    """


def azure_check_wanted(flag: bool | None) -> bool:
    """--azure-check: on when asked (azure-ai-ml must be there), else when azure-ai-ml is installed."""
    if flag and not azure_check.available():
        raise UserError("--azure-check: azure-ai-ml is not installed", azure_check.INSTALL_HINT)
    return azure_check.available() if flag is None else flag


def report_findings(imported: list[Imported]) -> None:
    """Every Azure field not carried over as it is, on stderr: the import never drops one silently."""
    for item in imported:
        for finding in item.findings:
            stderr.print(f"[yellow]warning:[/] {escape(finding.line())}", highlight=False, soft_wrap=True)


@import_group.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False)
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write one FILE.yaml per Azure file here (default: all to stdout).",
)
@click.option(
    "--collect-to",
    metavar="URI",
    help="Where a data_collector's records go (s3://, gs://, abfss:// or an absolute path); "
    "Azure writes them to the workspace's blob store, so a data_collector needs it.",
)
@click.option(
    "--job-image",
    default=PUBLIC_SERVING_IMAGE,
    show_default=True,
    metavar="IMAGE",
    help="A command job's image when its environment is not an image (an Azure environment, conda).",
)
@click.option(
    "--upload-to",
    metavar="URI",
    help="Copy local model folders (and a command job's local inputs) here (s3://, gs://, abfss://) and "
    "point the resources at the copy, as Azure uploads them to its workspace store; credentials as "
    "mlendpoints-fetch reads them (AWS_*, MLFLOW_S3_ENDPOINT_URL, ...).",
)
@click.option(
    "--azure-check/--no-azure-check",
    "check_with_azure",
    default=None,
    help="Check each file with Azure's own loaders (azure-ai-ml, offline) first, and report a refusal "
    "in Azure's words. Default: when azure-ai-ml is installed (pip install 'mlendpoints[azure]').",
)
def azureml(
    files: tuple[Path, ...],
    output_dir: Path | None,
    collect_to: str | None,
    job_image: str,
    upload_to: str | None,
    check_with_azure: bool | None,
) -> None:
    """Import Azure ML CLI v2 endpoint and deployment YAML.

    Reads managed and Kubernetes online endpoints and deployments, batch
    endpoints and model batch deployments (`$schema` says which; without it the
    fields do), and writes the OnlineEndpoint, OnlineDeployment, BatchEndpoint
    and BatchDeployment resources, with a ConfigMap for each code_configuration.
    A data_collector's records go to --collect-to; local model folders are
    copied to --upload-to. With azure-ai-ml installed, each file is first
    checked by Azure's own loaders. A command job becomes a
    Job whose mlflow_model (and uri_folder, uri_file) inputs the operator's
    webhook fetches into the pod; apply it once (`kubectl apply`), delete it
    to run it again.
    Fields with no equivalent are listed on stderr with what to do instead.
    The mapping: docs/azureml.md.

    \b
    Examples:
      mlendpoints import azureml endpoint.yml blue-deployment.yml | kubectl apply -f -
      mlendpoints import azureml endpoint.yml blue-deployment.yml -o k8s/
      mlendpoints import azureml blue-deployment.yml --upload-to s3://models/imported
    """
    options = ImportOptions(
        collect_to=collect_to,
        job_image=job_image,
        upload_to=check_destination(upload_to) if upload_to is not None else None,
        azure_check=azure_check_wanted(check_with_azure),
    )
    imported = import_files(files, options)
    report_findings(imported)
    if output_dir is None:
        click.echo(to_yaml(imported), nl=False)
        return
    sources = list(dict.fromkeys(files))
    stems = [source.stem for source in sources]
    if clash := sorted({stem for stem in stems if stems.count(stem) > 1}):
        raise UserError(
            f"-o: several files are named {clash[0]}.*, and each would be written to {clash[0]}.yaml",
            "import them into different folders, or to stdout",
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = output_dir / f"{source.stem}.yaml"
        target.write_text(to_yaml(item for item in imported if item.source == source))
        stderr.print(f"wrote {escape(str(target))}", highlight=False)
