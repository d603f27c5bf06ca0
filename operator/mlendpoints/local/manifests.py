"""Reading the YAML a user would `kubectl apply`, and validating it with the cluster's own rules."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlendpoints import azureml
from mlendpoints.api.batch import BatchDeploymentSpec
from mlendpoints.api.common import GROUP_VERSION
from mlendpoints.api.online import OnlineDeployment, OnlineDeploymentSpec, OnlineEndpoint, OnlineEndpointSpec
from mlendpoints.api.validation import (
    parse_spec,
    validate_deployment,
    validate_endpoint,
    validate_model_uri,
    validate_name,
)
from mlendpoints.errors import UserError
from mlendpoints.local.state import LocalSettings

YAML_SUFFIXES = (".yaml", ".yml", ".json")
SUPPORTING_KINDS = ("ConfigMap", "Secret")  # what a deployment's pods may reference


@dataclass(frozen=True)
class Manifest:
    source: Path
    body: dict[str, Any]
    findings: tuple[azureml.Finding, ...] = ()  # imported from Azure YAML: the fields not carried over

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))


@dataclass(frozen=True)
class LocalEndpoint:
    """One OnlineEndpoint and its OnlineDeployments, validated."""

    endpoint: OnlineEndpoint
    deployments: dict[str, OnlineDeployment]
    objects: tuple[
        dict[str, Any], ...
    ]  # ConfigMaps and Secrets given alongside (scoring scripts, credentials)

    @property
    def name(self) -> str:
        return str(self.endpoint.metadata["name"])


def _files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"{path}: no .yaml files in this directory", "pass the YAML files with -f")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or directory", "check the path given to -f")
    return files


def load(paths: Iterable[Path]) -> list[Manifest]:
    manifests = []
    # An Azure data_collector's records stay on this machine (Azure writes them to its blob store).
    # Azure's own loaders check each Azure file first when azure-ai-ml is installed, as the import does.
    azure_options = azureml.ImportOptions(
        collect_to=str(LocalSettings().home / "collected"), azure_check=azureml.azure_check.available()
    )
    for file in _files(paths):
        try:
            docs = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{file}:{mark.line + 1}" if mark else str(file)
            raise UserError(
                f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}", "fix the YAML syntax"
            ) from None
        for doc in docs:
            if doc is None:
                continue
            if azureml.is_azure_document(doc):
                # Azure ML CLI v2 YAML runs as it is: imported as `mlendpoints import azureml` would.
                imported = azureml.import_document(file, doc, azure_options)
                *supporting, resource = imported.objects
                manifests += [Manifest(file, obj) for obj in supporting]
                manifests.append(Manifest(file, resource, imported.findings))
                continue
            if not isinstance(doc, dict) or "kind" not in doc:
                raise UserError(
                    f"{file}: a document is not a Kubernetes object (no kind) nor Azure ML YAML",
                    "each document needs kind, or Azure's $schema",
                )
            manifests.append(Manifest(file, doc))
    return manifests


def _fail(manifest: Manifest, errors: list[str]) -> UserError:
    return UserError(
        f"{manifest.source}: {manifest.kind} {manifest.name!r}: " + "; ".join(errors),
        "fix the field named above; the cluster's admission webhook rejects the same",
    )


def select_endpoint(manifests: list[Manifest]) -> LocalEndpoint:
    """The one OnlineEndpoint and its deployments, validated by the same rules as the webhook."""
    endpoints = [m for m in manifests if m.kind == "OnlineEndpoint"]
    if len(endpoints) != 1:
        names = ", ".join(m.name for m in endpoints) or "none"
        raise UserError(
            f"expected exactly one OnlineEndpoint, found {len(endpoints)} ({names})",
            "pass the files of one endpoint and its OnlineDeployments",
        )
    endpoint_manifest = endpoints[0]
    for manifest in manifests:
        if manifest.kind in SUPPORTING_KINDS:
            continue
        if manifest.kind not in ("OnlineEndpoint", "OnlineDeployment"):
            raise UserError(
                f"{manifest.source}: {manifest.kind} {manifest.name!r} cannot run as a local endpoint",
                "local up runs one OnlineEndpoint, its OnlineDeployments and their ConfigMaps/Secrets",
            )
        if manifest.body.get("apiVersion") != GROUP_VERSION:
            raise _fail(
                manifest, [f"apiVersion: {manifest.body.get('apiVersion')!r}, expected {GROUP_VERSION!r}"]
            )
    name_errors = validate_name(endpoint_manifest.name)
    endpoint_spec, errors = parse_spec(OnlineEndpointSpec, endpoint_manifest.body.get("spec"))
    if name_errors or endpoint_spec is None:
        raise _fail(endpoint_manifest, name_errors + errors)
    if endpoint_spec.tls is not None:
        # Refused rather than half-supported: a local router is reached on loopback only.
        raise UserError(
            f"{endpoint_manifest.source}: spec.tls is not supported by local mode",
            "remove spec.tls for `mlendpoints local up` (it serves plain HTTP on 127.0.0.1)",
        )
    if endpoint_spec.authMode == "token":
        # Kubernetes tokens are checked by an API server (TokenReview, SubjectAccessReview): none here.
        raise UserError(
            f"{endpoint_manifest.source}: spec.authMode token is not supported by local mode "
            "(it needs a Kubernetes API server to review tokens)",
            "use authMode key or none for `mlendpoints local up`",
        )
    deployments: dict[str, OnlineDeployment] = {}
    for manifest in manifests:
        if manifest.kind != "OnlineDeployment":
            continue
        spec, errors = parse_spec(OnlineDeploymentSpec, manifest.body.get("spec"))
        if spec is None:
            raise _fail(manifest, errors)
        if spec.endpointName != endpoint_manifest.name:
            raise _fail(
                manifest,
                [
                    f"spec.endpointName: {spec.endpointName!r}, "
                    f"but the endpoint given is {endpoint_manifest.name!r}"
                ],
            )
        errors = validate_deployment(manifest.name, spec)
        if errors:
            raise _fail(manifest, errors)
        if manifest.name in deployments:
            raise _fail(manifest, ["metadata.name: defined twice"])
        deployments[manifest.name] = OnlineDeployment.model_validate({**manifest.body, "spec": spec})
    errors = validate_endpoint(endpoint_spec, deployments)
    if errors:
        raise _fail(endpoint_manifest, errors)
    return LocalEndpoint(
        endpoint=OnlineEndpoint.model_validate({**endpoint_manifest.body, "spec": endpoint_spec}),
        deployments=deployments,
        objects=tuple(m.body for m in manifests if m.kind in SUPPORTING_KINDS),
    )


@dataclass(frozen=True)
class LocalBatchDeployment:
    """One BatchDeployment, validated, and the ConfigMaps and Secrets given alongside."""

    name: str
    spec: BatchDeploymentSpec
    objects: tuple[dict[str, Any], ...]

    def code_files(self) -> dict[str, bytes]:
        """The scoring script's ConfigMap as files (data as text, binaryData decoded)."""
        code = self.spec.codeConfiguration
        if code is None:
            return {}
        for obj in self.objects:
            if obj.get("kind") == "ConfigMap" and (obj.get("metadata") or {}).get("name") == code.configMap:
                files = {key: str(text).encode() for key, text in (obj.get("data") or {}).items()}
                files |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
                if code.scoringScript not in files:
                    raise UserError(
                        f"batch deployment {self.name!r}: codeConfiguration.scoringScript "
                        f"{code.scoringScript!r} is not in ConfigMap {code.configMap!r}",
                        "check the names",
                    )
                return files
        raise UserError(
            f"batch deployment {self.name!r}: codeConfiguration.configMap {code.configMap!r} "
            "is not in the files",
            "pass the file holding that ConfigMap with -f too",
        )


def select_batch_deployment(manifests: list[Manifest], name: str | None) -> LocalBatchDeployment:
    """The BatchDeployment to run: `name`, else the only one, else the given endpoint's default."""
    candidates = [m for m in manifests if m.kind == "BatchDeployment"]
    for manifest in manifests:
        if manifest.kind not in (*SUPPORTING_KINDS, "BatchDeployment", "BatchEndpoint"):
            raise UserError(
                f"{manifest.source}: {manifest.kind} {manifest.name!r} is not part of a batch deployment",
                "pass a BatchDeployment (mlendpoints or Azure YAML), its endpoint and its ConfigMaps",
            )
    if name is None and len(candidates) > 1:
        defaults = {
            str((m.body.get("spec") or {}).get("defaultDeployment"))
            for m in manifests
            if m.kind == "BatchEndpoint"
        }
        candidates = [m for m in candidates if m.name in defaults] or candidates
    if name is not None:
        candidates = [m for m in candidates if m.name == name]
    if len(candidates) != 1:
        found = ", ".join(m.name for m in manifests if m.kind == "BatchDeployment") or "none"
        raise UserError(
            f"expected one BatchDeployment{f' named {name!r}' if name else ''} in the files, found: {found}",
            "name it with --deployment" if found != "none" else "pass the deployment's file with -f",
        )
    [manifest] = candidates
    if manifest.body.get("apiVersion") != GROUP_VERSION:
        wrong = manifest.body.get("apiVersion")
        raise _fail(manifest, [f"apiVersion: {wrong!r}, expected {GROUP_VERSION!r}"])
    spec, errors = parse_spec(BatchDeploymentSpec, manifest.body.get("spec"))
    if spec is None:
        raise _fail(manifest, errors)
    if errors := validate_name(manifest.name) + validate_model_uri(spec.model):
        raise _fail(manifest, errors)
    return LocalBatchDeployment(
        name=manifest.name,
        spec=spec,
        objects=tuple(m.body for m in manifests if m.kind in SUPPORTING_KINDS),
    )
