"""Read Azure ML CLI v2 YAML files and turn each document into mlendpoints resources.

A file's Azure kind comes from its `$schema` (as Azure's examples write it),
else from the keys only one kind has. Every field goes through `table.ROWS`;
a field without a row is a finding (listed, never dropped silently). What comes
out is validated with the API's own rules (`mlendpoints.api.validation`, the
same checks as the CRDs' CEL rules), so an import that succeeds applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mlendpoints.api.batch import BatchDeploymentSpec, BatchEndpointSpec
from mlendpoints.api.common import GROUP_VERSION
from mlendpoints.api.online import OnlineDeploymentSpec, OnlineEndpointSpec
from mlendpoints.api.validation import (
    parse_spec,
    validate_deployment,
    validate_endpoint,
    validate_model_uri,
    validate_name,
)
from mlendpoints.azureml.azure_check import azure_refusal, loader_name
from mlendpoints.azureml.context import (
    ONLINE_ENDPOINTS,
    TARGET_KIND,
    AzureKind,
    Context,
    Finding,
    ImportOptions,
    ImportRefused,
)
from mlendpoints.azureml.table import ROWS, Row, rows_for
from mlendpoints.errors import UserError
from mlendpoints.render.command_job import OUTPUTS_ROOT, CommandJobError, render_command_job
from mlendpoints.render.model_inputs import env_name

_SCHEMA_NAME = re.compile(r"/(?P<name>[A-Za-z]+)\.schema\.json$")
# batchDeployment is the older name of modelBatchDeployment (settings at the top level).
_SCHEMA_KINDS = {kind.value: kind for kind in AzureKind} | {
    "batchDeployment": AzureKind.MODEL_BATCH_DEPLOYMENT
}
_BATCH_DEPLOYMENT_KEYS = {"settings", "compute", "mini_batch_size", "output_action", "retry_settings"}
_ONLINE_ENDPOINT_KEYS = {"traffic", "mirror_traffic", "public_network_access"}
# Top-level Azure fields no other YAML a user passes (Kubernetes objects, conda files) has at the top.
_AZURE_ONLY_KEYS = {row.azure for row in ROWS if "." not in row.azure} - {
    "name",
    "description",
    "tags",
    "properties",
    "type",
    "model",
    "environment",
    "identity",
    "resources",
}
_SPEC_MODELS: dict[str, type[BaseModel]] = {
    "OnlineEndpoint": OnlineEndpointSpec,
    "OnlineDeployment": OnlineDeploymentSpec,
    "BatchEndpoint": BatchEndpointSpec,
    "BatchDeployment": BatchDeploymentSpec,
}


@dataclass(frozen=True)
class Imported:
    """One Azure document's resources: the ConfigMaps it needs first, then the resource."""

    source: Path
    azure_kind: AzureKind
    objects: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...]

    @property
    def resource(self) -> dict[str, Any]:
        return self.objects[-1]


def is_azure_document(doc: Any) -> bool:
    """An Azure ML CLI v2 document: no Kubernetes kind, and Azure's `$schema` or snake_case keys."""
    if not isinstance(doc, dict) or "kind" in doc or "apiVersion" in doc:
        return False
    if "azureml" in str(doc.get("$schema", "")):
        return True
    return any(
        isinstance(key, str) and (key in _AZURE_ONLY_KEYS or re.fullmatch(r"[a-z]+(_[a-z]+)+", key))
        for key in doc
    )


def azure_kind(source: Path, doc: dict[str, Any]) -> AzureKind:
    schema = doc.get("$schema")
    if schema is not None:
        match = _SCHEMA_NAME.search(str(schema))
        if match and match["name"] in _SCHEMA_KINDS:
            return _SCHEMA_KINDS[match["name"]]
        raise ImportRefused(
            f"{source}: $schema: {schema!r} is not a kind mlendpoints imports",
            "import online endpoints and deployments (managed or kubernetes), batch endpoints and "
            "model batch deployments",
        )
    if doc.get("type") == "command":
        return AzureKind.COMMAND_JOB
    if "endpoint_name" in doc:
        resources = doc.get("resources") or {}
        if doc.get("type") == "model" or _BATCH_DEPLOYMENT_KEYS & set(doc) or "instance_count" in resources:
            return AzureKind.MODEL_BATCH_DEPLOYMENT
        if doc.get("type") == "kubernetes":
            return AzureKind.KUBERNETES_ONLINE_DEPLOYMENT
        return AzureKind.MANAGED_ONLINE_DEPLOYMENT
    if "defaults" in doc:
        return AzureKind.BATCH_ENDPOINT
    if _ONLINE_ENDPOINT_KEYS & set(doc) or doc.get("auth_mode") in ("key", "aml_token"):
        if "compute" in doc:
            return AzureKind.KUBERNETES_ONLINE_ENDPOINT
        return AzureKind.MANAGED_ONLINE_ENDPOINT
    raise ImportRefused(
        f"{source}: $schema: missing, and the fields do not say which Azure kind this is",
        "add the $schema line Azure's examples start with, e.g. "
        "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json",
    )


def _job_name(source: Path) -> str:
    return re.sub(r"[^a-z0-9]+", "-", source.stem.lower()).strip("-")[:63].strip("-") or "azureml-job"


def _substitute(command: str, section: str, name: str, text: str) -> str:
    """`${{section.name}}` -> text, verbatim (Azure substitutes the text, no quoting)."""
    pattern = r"\$\{\{\s*" + section + r"\." + re.escape(name) + r"\s*\}\}"
    return re.sub(pattern, lambda _: text, command)


def _command_job(ctx: Context) -> dict[str, Any]:
    """The command job's plan (ctx.spec, from the table) as render/command_job.py's Job."""
    plan = ctx.spec
    if "command" not in plan:
        raise ctx.refuse("command", "required", "a command job runs a command line")
    if "image" not in plan:
        raise ctx.refuse("environment", "required", "name an image: environment: {image: ...}")
    inputs: dict[str, str] = plan.get("inputs", {})
    command: str = plan["command"]
    for name, value in plan.get("literals", {}).items():  # Azure writes literals into the line as text
        command = _substitute(command, "inputs", name, value)
    for name, file in plan.get("files", {}).items():  # a uri_file input is the file in its folder
        command = _substitute(command, "inputs", name, f"$({env_name(name)})/{file}")
    outputs: list[str] = plan.get("outputs", [])
    for name in outputs:
        command = _substitute(command, "outputs", name, f"{OUTPUTS_ROOT}/{name}")
    if leftover := re.search(r"\$\{\{\s*outputs\.[^}]*\}\}", command):
        raise ctx.refuse("command", f"{leftover.group(0)} names no output", "declare it under outputs")
    try:
        return render_command_job(
            plan["image"],
            ["/bin/sh", "-c", command],
            inputs,
            name=ctx.name,
            env={item["name"]: item["value"] for item in plan.get("env", [])},
            code_config_map=plan.get("code"),
            outputs=outputs,
            active_deadline_seconds=plan.get("timeout"),
            labels=ctx.labels,
            annotations=ctx.annotations,
        )
    except CommandJobError as exc:
        raise ctx.refuse(
            "command" if "names no input" in str(exc) else "inputs", str(exc), "fix the Azure job"
        ) from None


def _walk(ctx: Context, rows: dict[str, Row], doc: dict[str, Any], prefix: str = "") -> None:
    for key, value in doc.items():
        field = f"{prefix}{key}"
        if field in rows:
            rows[field].apply(ctx, field, value)
        elif any(name.startswith(field + ".") for name in rows) and isinstance(value, dict | None):
            _walk(ctx, rows, value or {}, field + ".")
        else:
            ctx.warn(
                field,
                f"not imported: not a field of an Azure {ctx.kind.value} that mlendpoints knows; "
                "remove it, or set what it stands for on the resource by hand (see docs/azureml.md)",
            )


def _validate(ctx: Context, kind: str, spec: dict[str, Any]) -> list[str]:
    parsed, errors = parse_spec(_SPEC_MODELS[kind], spec)
    if parsed is None:
        return errors
    if isinstance(parsed, OnlineEndpointSpec):
        return validate_endpoint(parsed)
    if isinstance(parsed, OnlineDeploymentSpec):
        return validate_deployment(ctx.name, parsed)
    if isinstance(parsed, BatchDeploymentSpec):
        return validate_model_uri(parsed.model)
    return []


def import_document(source: Path, doc: dict[str, Any], options: ImportOptions | None = None) -> Imported:
    options = options or ImportOptions()
    kind = azure_kind(source, doc)
    if options.azure_check and (refusal := azure_refusal(source, kind, doc)):
        raise ImportRefused(
            f"{source}: Azure's own loader ({loader_name(kind, doc)}) refuses it: {refusal}",
            "fix the file as Azure says: `az ml` would refuse it too (--no-azure-check imports it unchecked)",
        )
    name = doc.get("name")
    if kind is AzureKind.COMMAND_JOB and name is None:
        name = _job_name(source)  # Azure names a job when it is submitted; a Job needs one to be applied
    if not isinstance(name, str) or not name:
        raise ImportRefused(f"{source}: name: required", "every Azure endpoint and deployment has a name")
    if errors := validate_name(name, "name"):
        raise ImportRefused(
            f"{source}: {errors[0]}",
            "Kubernetes names are lower-case: rename it (and where it is referred to)",
        )
    ctx = Context(source=source, kind=kind, name=name, options=options)
    _walk(ctx, rows_for(kind), doc)
    if kind is AzureKind.COMMAND_JOB:
        if "name" not in doc:
            ctx.warn("name", f"none given: the Job is named {name!r} (after the file)")
        return Imported(source, kind, (*ctx.objects, _command_job(ctx)), tuple(ctx.findings))
    if kind in ONLINE_ENDPOINTS:
        # Azure's clients expect its answer to a model's error: 424 with the model's status in headers.
        ctx.spec.setdefault("modelErrors", "azureml")
    if kind is AzureKind.MODEL_BATCH_DEPLOYMENT:
        # Azure's predictions.csv has no header line; its readers name the columns themselves.
        ctx.spec.setdefault("settings", {}).setdefault("outputHeader", False)
    target = TARGET_KIND[kind]
    if errors := _validate(ctx, target, ctx.spec):
        raise ImportRefused(
            f"{source}: the imported {target} {name!r} is invalid: " + "; ".join(errors),
            "fix the Azure field it comes from (docs/azureml.md maps each one)",
        )
    metadata: dict[str, Any] = {"name": name}
    if ctx.labels:
        metadata["labels"] = ctx.labels
    if ctx.annotations:
        metadata["annotations"] = ctx.annotations
    resource = {"apiVersion": GROUP_VERSION, "kind": target, "metadata": metadata, "spec": ctx.spec}
    return Imported(source, kind, (*ctx.objects, resource), tuple(ctx.findings))


def read_documents(source: Path) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(source.read_text()) if d is not None]
    except OSError as exc:
        raise UserError(f"{source}: {exc.strerror}", "check the file name") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else str(source)
        raise UserError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}", "fix the YAML") from None


def import_file(source: Path, options: ImportOptions | None = None) -> list[Imported]:
    imported = []
    for doc in read_documents(source):
        if not isinstance(doc, dict):
            raise ImportRefused(
                f"{source}: a document is not a mapping", "an Azure YAML file is key: value pairs"
            )
        imported.append(import_document(source, doc, options))
    return imported


def import_files(sources: Iterable[Path], options: ImportOptions | None = None) -> list[Imported]:
    return [item for source in sources for item in import_file(source, options)]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (a scoring script in a ConfigMap) as literal blocks, readable in a diff."""


def _string_style(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(c in value for c in "\t\r") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string_style)


def to_yaml(imported: Iterable[Imported]) -> str:
    return yaml.dump_all(
        [obj for item in imported for obj in item.objects], Dumper=_Dumper, sort_keys=False, width=110
    )
