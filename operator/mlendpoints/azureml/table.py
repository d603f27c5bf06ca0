"""The mapping from Azure ML CLI v2 YAML to mlendpoints resources: one row per Azure field.

This is the one place the mapping lives: `importer.py` walks a file's fields
through `ROWS` and lists every field without a row as unsupported, so nothing
is dropped silently; docs/azureml.md documents each row (a unit test holds it
to this table). A row either sets a `spec` field, or records a finding (the
field was not carried over, and what to do instead), or refuses the file.

Model URIs: an Azure registry reference becomes the MLflow registry's URI of
the same name and version, so the model must be registered in MLflow's
registry under that name (`azureml:diabetes:3` -> `models:/diabetes/3`).
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlendpoints.azureml.context import (
    ALL_KINDS,
    DEPLOYMENTS,
    ENDPOINTS,
    JOBS,
    ONLINE_DEPLOYMENTS,
    ONLINE_ENDPOINTS,
    AzureKind,
    Context,
)
from mlendpoints.azureml.upload import upload_folder
from mlendpoints.render.command_job import OUTPUTS_ROOT
from mlendpoints_serving import contract

Apply = Callable[[Context, str, Any], None]

ANNOTATION_DESCRIPTION = "mlendpoints.io/description"
ANNOTATION_TAGS = "mlendpoints.io/azureml-tags"
ANNOTATION_PROPERTIES = "mlendpoints.io/azureml-properties"
ANNOTATION_DISPLAY_NAME = "mlendpoints.io/azureml-display-name"
ANNOTATION_EXPERIMENT_NAME = "mlendpoints.io/azureml-experiment-name"
CONFIGMAP_MAX_BYTES = 1024 * 1024  # what the API server stores in one ConfigMap
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# Kubernetes label syntax: an optional DNS prefix, a name of at most 63 characters, a value likewise.
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
AZURE_BASE_IMAGES = "mcr.microsoft.com/azureml/"
IMAGE_HINT = (
    "the deployment runs on the mlendpoints serving image (envManager local: the image's packages); "
    "if the model needs other packages, set spec.envManager: virtualenv (installs the model's "
    "requirements.txt) or spec.image to an image built FROM mlendpoints/serving"
)


@dataclass(frozen=True)
class Row:
    kinds: frozenset[AzureKind]
    azure: str  # the Azure field, dotted when nested
    target: str  # what it becomes, for people: a spec field, "warning" or "error"
    apply: Apply


def _nothing(ctx: Context, field: str, value: Any) -> None:
    """Fields the importer reads itself ($schema, name, type)."""


# --- value checks: a wrong type is refused naming the Azure field ---------------------------


def _integer(ctx: Context, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.refuse(field, f"{value!r} is not an integer", "write a whole number")
    return value


def _string(ctx: Context, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ctx.refuse(field, f"{value!r} is not a non-empty string", "write a string")
    return value


def _mapping(ctx: Context, field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.refuse(field, f"expected a mapping, got {type(value).__name__}", "write key: value pairs")
    return value


def _to(target: str, check: Callable[[Context, str, Any], Any] = _integer) -> Apply:
    def apply(ctx: Context, field: str, value: Any) -> None:
        ctx.set(target, check(ctx, field, value))

    return apply


def _warn(message: str) -> Apply:
    def apply(ctx: Context, field: str, value: Any) -> None:
        ctx.warn(field, message.format(value=value))

    return apply


# --- metadata --------------------------------------------------------------------------------


def _description(ctx: Context, field: str, value: Any) -> None:
    text = _string(ctx, field, value)
    if ctx.kind in ENDPOINTS:
        ctx.set("description", text)
    else:  # deployments have no description field
        ctx.annotations[ANNOTATION_DESCRIPTION] = text


def _tags(ctx: Context, field: str, value: Any) -> None:
    """Tags that are valid Kubernetes labels become labels; the others one JSON annotation."""
    rest: dict[str, str] = {}
    for key, tag in _mapping(ctx, field, value).items():
        text = "" if tag is None else str(tag)
        if LABEL_KEY.match(str(key)) and LABEL_VALUE.match(text):
            ctx.labels[str(key)] = text
        else:
            rest[str(key)] = text
    if rest:
        ctx.annotations[ANNOTATION_TAGS] = json.dumps(rest, sort_keys=True)
        ctx.warn(
            field,
            f"{sorted(rest)} are not valid Kubernetes label keys/values: kept in the annotation "
            f"{ANNOTATION_TAGS} instead of as labels",
        )


def _properties(ctx: Context, field: str, value: Any) -> None:
    ctx.annotations[ANNOTATION_PROPERTIES] = json.dumps(_mapping(ctx, field, value), sort_keys=True)


# --- endpoints -------------------------------------------------------------------------------


def _online_auth_mode(ctx: Context, field: str, value: Any) -> None:
    if value == "key":
        ctx.set("authMode", "key")
        return
    if value in ("aml_token", "aad_token"):
        # Both are "the caller presents an identity token": here a Kubernetes one, reviewed by the API
        # server (TokenReview) and authorised by RBAC on onlineendpoints/score. An Entra ID (aad) token
        # passes where the API server authenticates Entra ID (AKS with Entra integration); a
        # ServiceAccount token passes everywhere. Azure ML's own tokens are never accepted.
        ctx.set("authMode", "token")
        ctx.warn(
            field,
            f"{value!r} -> authMode token: callers send a Kubernetes bearer token (a ServiceAccount's, "
            "or one the API server accepts"
            + (", e.g. Entra ID on AKS with Entra integration" if value == "aad_token" else "")
            + "), and RBAC grants create on onlineendpoints/score",
        )
        return
    raise ctx.refuse(field, f"{value!r} is not an Azure auth mode", "use key")


def _traffic(target: str) -> Apply:
    def apply(ctx: Context, field: str, value: Any) -> None:
        shares = {str(k): _integer(ctx, f"{field}.{k}", v) for k, v in _mapping(ctx, field, value).items()}
        if target == "mirrorTraffic":
            # Azure accepts a 0% mirror (no copies); here a mirror entry means 1-50%.
            for name in [k for k, v in shares.items() if v == 0]:
                del shares[name]
                ctx.warn(f"{field}.{name}", "0% mirrors nothing: left out (mlendpoints' range is 1-50)")
        if shares:
            ctx.set(target, shares)

    return apply


def _public_network_access(ctx: Context, field: str, value: Any) -> None:
    if value == "enabled":
        ctx.warn(
            field,
            "the endpoint's Service is ClusterIP (in-cluster only); for an address outside the cluster "
            "set spec.service.type: LoadBalancer (or NodePort), or route an Ingress to it",
        )
    elif value != "disabled":
        raise ctx.refuse(field, f"{value!r} is not enabled or disabled", "write enabled or disabled")


def _defaults(ctx: Context, field: str, value: Any) -> None:
    for key, item in _mapping(ctx, field, value).items():
        if key == "deployment_name":
            ctx.set("defaultDeployment", _string(ctx, f"{field}.{key}", item))
        else:
            ctx.warn(f"{field}.{key}", "not an Azure batch endpoint default: ignored")


# --- deployments: model, code, environment ---------------------------------------------------

_AZURE_NAME_VERSION = re.compile(r"^azureml:(?P<name>[^:@/]+):(?P<version>[0-9]+)$")
_AZURE_NAME_LABEL = re.compile(r"^azureml:(?P<name>[^:@/]+)@(?P<label>[A-Za-z0-9_-]+)$")
_AZURE_ASSET_ID = re.compile(
    r"^azureml://(?:registries/[^/]+|subscriptions/[^/]+/resourceGroups/[^/]+/workspaces/[^/]+)"
    r"/models/(?P<name>[^/]+)/(?:versions/(?P<version>[0-9]+)|labels/(?P<label>[A-Za-z0-9_-]+))$",
    re.IGNORECASE,
)
_REMOTE_PATH = re.compile(r"^(s3|gs|abfss|wasbs|https?)://")


def _registry_uri(ctx: Context, field: str, name: str, version: str | None, label: str | None) -> str:
    if version is not None:
        return f"models:/{name}/{version}"
    if label == "latest":
        return f"models:/{name}/latest"
    ctx.warn(
        field,
        f"Azure label {label!r} is read as the MLflow alias of that name (models:/{name}@{label}); "
        "set that alias in the MLflow registry",
    )
    return f"models:/{name}@{label}"


def _model_reference(ctx: Context, field: str, value: str) -> str:
    for pattern in (_AZURE_NAME_VERSION, _AZURE_NAME_LABEL, _AZURE_ASSET_ID):
        if match := pattern.match(value):
            groups = match.groupdict()
            if pattern is _AZURE_ASSET_ID and value.lower().startswith("azureml://registries/"):
                ctx.warn(field, "an Azure registry's model: served from the MLflow registry by the same name")
            return _registry_uri(ctx, field, groups["name"], groups.get("version"), groups.get("label"))
    raise ctx.refuse(
        field,
        f"{value!r} is not an Azure model reference",
        "write azureml:NAME:VERSION, azureml:NAME@latest, or model: {path: ./folder}",
    )


def _model_path(ctx: Context, field: str, value: Any) -> str:
    path = _string(ctx, field, value)
    if _REMOTE_PATH.match(path):
        if path.endswith("/"):  # a folder, as Azure registers it
            _note_model_folder(ctx, field, posixpath.basename(path.rstrip("/")))
        return path
    if path.startswith("azureml:"):
        raise ctx.refuse(
            field,
            f"{path!r} is in Azure ML storage, which mlendpoints cannot read",
            "copy the model folder to s3://, gs://, abfss:// or https:// (or a local path); point path there",
        )
    if "://" in path:
        raise ctx.refuse(field, f"{path!r}: unsupported scheme", "use s3://, gs://, abfss://, https://")
    local = ctx.local_path(path)
    if not local.exists():
        raise ctx.refuse(field, f"{path!r} ({local}) does not exist", "the path is relative to the YAML file")
    if local.is_dir():
        _note_model_folder(ctx, field, local.name)
    if ctx.options.upload_to is not None:
        # As Azure uploads it to its workspace store on create: pods fetch it from there.
        uploaded = upload_folder(local, ctx.options.upload_to, ctx.name)
        ctx.warn(field, f"the local {path!r} is uploaded to {uploaded}: spec.model is that URI")
        return uploaded
    ctx.warn(
        field,
        f"a local folder: spec.model is its absolute path {local}, which `mlendpoints local up` reads; "
        "pods on a cluster cannot: pass --upload-to s3://... (or gs://, abfss://), or register it in MLflow",
    )
    return str(local)


def _note_model_folder(ctx: Context, field: str, name: str) -> None:
    """Azure puts a model registered from folder `name` at AZUREML_MODEL_DIR/<name>, and scripts read it
    there: a scoring script gets the same layout (codeConfiguration.modelFolder)."""
    if not re.fullmatch(contract.MODEL_FOLDER_PATTERN, name):
        ctx.warn(
            field,
            f"the folder name {name!r} is not one mlendpoints can lay out under AZUREML_MODEL_DIR "
            "(letters, digits, . _ -): a scoring script finds the model's files at AZUREML_MODEL_DIR itself",
        )
        return
    ctx.model_folder = name
    _lay_out_model_folder(ctx)


def _lay_out_model_folder(ctx: Context) -> None:
    # Either field may come first in the Azure file: whichever comes second joins them.
    code = ctx.spec.get("codeConfiguration")
    if ctx.model_folder is not None and isinstance(code, dict):
        code["modelFolder"] = ctx.model_folder


def _model(ctx: Context, field: str, value: Any) -> None:
    if isinstance(value, str):
        ctx.set("model", _model_reference(ctx, field, value))
        return
    spec = _mapping(ctx, field, value)
    model_type = spec.get("type", "mlflow_model")
    if model_type == "custom_model":
        ctx.warn(
            f"{field}.type",
            "custom_model: mlendpoints serves MLflow models; the folder must hold an MLmodel file "
            "(save it with mlflow.<flavor>.save_model), even with a scoring script",
        )
    elif model_type != "mlflow_model":
        raise ctx.refuse(f"{field}.type", f"{model_type!r} is not supported", "use an MLflow model")
    if "path" in spec:
        ctx.set("model", _model_path(ctx, f"{field}.path", spec["path"]))
        for key in sorted(set(spec) - {"path", "type"}):
            ctx.warn(
                f"{field}.{key}",
                "registration metadata, not used: the model is served from its path (register it in "
                "MLflow and write azureml:NAME:VERSION to serve a registered version)",
            )
        return
    if "name" in spec and "version" in spec:
        name, version = str(spec["name"]), str(spec["version"])
        ctx.set("model", _registry_uri(ctx, field, name, version if version.isdigit() else None, version))
        for key in sorted(set(spec) - {"name", "version", "type"}):
            ctx.warn(f"{field}.{key}", "registration metadata, not used")
        return
    raise ctx.refuse(field, "neither a path nor a name and version", "write model: {path: ./folder}")


def _code_files(ctx: Context, field: str, folder: Path) -> dict[str, bytes]:
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    if not folder.is_dir():
        raise ctx.refuse(field, f"{folder} does not exist", "the path is relative to the YAML file")
    files: dict[str, bytes] = {}
    for path in sorted(folder.iterdir()):
        if path.name == "__pycache__":
            continue  # compiled files, made again on import
        if path.is_dir():
            ctx.warn(
                f"{field}/{path.name}",
                "a subfolder is not carried: the code ConfigMap holds one folder level; put helper modules "
                "next to the scoring script, or install them into an image built FROM mlendpoints/serving",
            )
        elif not CONFIGMAP_KEY.match(path.name):
            raise ctx.refuse(field, f"{path.name!r} is not a valid ConfigMap key", "rename the file")
        else:
            files[path.name] = path.read_bytes()
    return files


def _config_map(ctx: Context, field: str, name: str, files: dict[str, bytes]) -> dict[str, Any]:
    """A code folder's files as a ConfigMap (text as data, the rest as binaryData), refused over 1 MiB."""
    size = sum(len(k) + len(v) for k, v in files.items())
    if size > CONFIGMAP_MAX_BYTES:
        raise ctx.refuse(
            field,
            f"{size} bytes of code, more than a ConfigMap holds ({CONFIGMAP_MAX_BYTES})",
            "keep only the scoring script and its helpers there, or build an image FROM mlendpoints/serving",
        )
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for key, content in files.items():
        try:
            data[key] = content.decode()
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode()
    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data,
    }
    if binary:
        config_map["binaryData"] = binary
    return config_map


def _code_configuration(ctx: Context, field: str, value: Any) -> None:
    spec = _mapping(ctx, field, value)
    code = _string(ctx, f"{field}.code", spec.get("code"))
    script = _string(ctx, f"{field}.scoring_script", spec.get("scoring_script"))
    if code.startswith("azureml:"):
        raise ctx.refuse(f"{field}.code", f"{code!r} is an Azure code asset", "point code at a local folder")
    if "/" in script.strip("./") or "\\" in script:
        raise ctx.refuse(
            f"{field}.scoring_script",
            f"{script!r} is in a subfolder of code: the code ConfigMap holds one folder level",
            "point code at the folder holding the script",
        )
    for key in sorted(set(spec) - {"code", "scoring_script"}):
        ctx.warn(f"{field}.{key}", "not an Azure code_configuration field: ignored")
    files = _code_files(ctx, f"{field}.code", ctx.local_path(code))
    script_name = Path(script).name
    if script_name not in files:
        raise ctx.refuse(
            f"{field}.scoring_script", f"{script!r} is not in {ctx.local_path(code)}", "check the names"
        )
    ctx.objects.append(_config_map(ctx, f"{field}.code", f"{ctx.name}-code", files))
    ctx.set("codeConfiguration", {"configMap": f"{ctx.name}-code", "scoringScript": script_name})
    _lay_out_model_folder(ctx)


def _environment(ctx: Context, field: str, value: Any) -> None:
    if isinstance(value, str):
        ctx.warn(field, f"Azure ML environment {value!r} is not an image: ignored; {IMAGE_HINT}")
        return
    spec = _mapping(ctx, field, value)
    image = spec.get("image")
    if isinstance(image, str) and not image.startswith(AZURE_BASE_IMAGES):
        ctx.set("image", image)
        ctx.warn(
            f"{field}.image",
            f"spec.image is {image!r}: it must contain mlendpoints' entry points "
            "(mlendpoints-serve, mlendpoints-fetch); build it FROM mlendpoints/serving",
        )
    elif image is not None:
        ctx.warn(
            f"{field}.image", f"{image!r} is an Azure base image, not a serving image: ignored; {IMAGE_HINT}"
        )
    for key in sorted(set(spec) - {"image"}):
        what = {
            "conda_file": "conda dependencies are not installed",
            "build": "a Docker build context is not built",
            "inference_config": "custom container routes are not supported (the server's routes are fixed)",
        }.get(key, "Azure environment metadata")
        ctx.warn(f"{field}.{key}", f"{what}: ignored; {IMAGE_HINT}")


def _environment_variables(ctx: Context, field: str, value: Any) -> None:
    env = []
    for name, item in _mapping(ctx, field, value).items():
        if isinstance(item, dict | list):
            raise ctx.refuse(f"{field}.{name}", "not a scalar value", "write a string")
        env.append({"name": str(name), "value": "" if item is None else str(item)})
    if env:
        ctx.set("env", env)


# Azure's payload-logging collections, and the custom-logging names its MLflow deployments collect
# without a script: each is the request or the response body at the router.
_COLLECTED_BODIES = {
    "request": "request",
    "response": "response",
    "model_inputs": "request",
    "model_outputs": "response",
}
_ROLLING = {"hour": "hour", "day": "day", "minute": "hour"}
_DATA_COLLECTOR_KEYS = {"collections", "sampling_rate", "rolling_rate", "request_logging"}


def _azure_bool(ctx: Context, field: str, value: Any) -> bool:
    """Azure writes these as the strings 'True' / 'False' (any case), or as booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ctx.refuse(field, f"{value!r} is not true or false", "write 'True' or 'False'")


def _data_collector(ctx: Context, field: str, value: Any) -> None:
    """Azure's data_collector -> spec.dataCollector: the router records request and response bodies."""
    spec = _mapping(ctx, field, value or {})
    enabled: dict[str, bool] = {}
    for name, collection in _mapping(ctx, f"{field}.collections", spec.get("collections") or {}).items():
        where = f"{field}.collections.{name}"
        collection = _mapping(ctx, where, collection or {})
        on = _azure_bool(ctx, f"{where}.enabled", collection.get("enabled", False))
        body = _COLLECTED_BODIES.get(str(name))
        if body is None:
            if on:
                ctx.warn(
                    where,
                    "a custom-logging collection (the scoring script's azureml-ai-monitoring "
                    "Collector.collect()): not collected; the request and response collections are",
                )
            continue
        enabled[body] = enabled.get(body, False) or on
        if on and name in ("model_inputs", "model_outputs"):
            ctx.warn(
                where,
                f"collected as the {body} body at the router: an MLflow model's {name.split('_')[1]}, as "
                "Azure collects them; a scoring script's own Collector.collect() calls are not collected",
            )
        if "data" in collection:
            ctx.warn(
                f"{where}.data",
                "an Azure data asset: not created; the records go to the destination (--collect-to)",
            )
        for key in sorted(set(collection) - {"enabled", "data"}):
            ctx.warn(f"{where}.{key}", "not an Azure collection field: ignored")
    for key in sorted(set(spec) - _DATA_COLLECTOR_KEYS):
        ctx.warn(f"{field}.{key}", "not an Azure data_collector field: ignored")
    if not any(enabled.values()):
        ctx.warn(field, "no collection is enabled: nothing is collected, so no spec.dataCollector is set")
        return
    destination = ctx.options.collect_to
    if destination is None:
        raise ctx.refuse(
            field,
            "mlendpoints needs a destination for the records (Azure writes them to the workspace's "
            "blob store)",
            "pass --collect-to s3://BUCKET/PREFIX (or gs://, abfss://, an absolute path on a PVC)",
        )
    collector: dict[str, Any] = {
        "destination": destination,
        "collections": {body: {"enabled": enabled.get(body, False)} for body in ("request", "response")},
    }
    if "sampling_rate" in spec:
        rate = spec["sampling_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ctx.refuse(f"{field}.sampling_rate", f"{rate!r} is not a number", "write 0 to 1")
        collector["samplingRate"] = float(rate)
    if "rolling_rate" in spec:
        rolling = str(spec["rolling_rate"]).lower()
        if rolling not in _ROLLING:
            raise ctx.refuse(
                f"{field}.rolling_rate", f"{spec['rolling_rate']!r} is not minute, hour or day", "use hour"
            )
        collector["rolling"] = _ROLLING[rolling]
        if rolling == "minute":
            ctx.warn(f"{field}.rolling_rate", "minute: folders roll by the hour (<dd>/<hh>/), the finest")
    logging = _mapping(ctx, f"{field}.request_logging", spec.get("request_logging") or {})
    for key in sorted(set(logging) - {"capture_headers"}):
        ctx.warn(f"{field}.request_logging.{key}", "not an Azure request_logging field: ignored")
    headers = logging.get("capture_headers") or []
    if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
        raise ctx.refuse(
            f"{field}.request_logging.capture_headers", f"{headers!r} is not a list of names", "list names"
        )
    if any(h.lower() == "authorization" for h in headers):
        ctx.warn(f"{field}.request_logging.capture_headers", "Authorization is never collected: left out")
    if kept := [h for h in headers if h.lower() != "authorization"]:
        collector["headers"] = kept
    ctx.set("dataCollector", collector)
    ctx.warn(
        field,
        f"records go to {destination}/<endpoint>/<deployment>/<yyyy>/<mm>/<dd>/... as JSON lines; give "
        "the router pods access (spec.dataCollector.credentialsSecret, or the pods' cloud identity)",
    )


def _instance_type(ctx: Context, field: str, value: Any) -> None:
    ctx.warn(
        field,
        f"{value!r}: mlendpoints has no instance types; to run on such nodes set spec.nodeSelector, e.g. "
        f"{{node.kubernetes.io/instance-type: {value}}}, and spec.resources",
    )


def _scale_type(ctx: Context, field: str, value: Any) -> None:
    types = {"default": "default", "target_utilization": "targetUtilization"}
    if value not in types:
        raise ctx.refuse(field, f"{value!r} is not default or target_utilization", "use one of those")
    ctx.set("scaleSettings.type", types[value])


def _quantities(target: str) -> Apply:
    def apply(ctx: Context, field: str, value: Any) -> None:
        quantities = {}
        for name, quantity in _mapping(ctx, field, value).items():
            if isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
                raise ctx.refuse(
                    f"{field}.{name}", f"{quantity!r} is not a quantity", "write e.g. 500m or 2Gi"
                )
            quantities[str(name)] = quantity if isinstance(quantity, int | str) else str(quantity)
        ctx.set(target, quantities)

    return apply


def _batch_type(ctx: Context, field: str, value: Any) -> None:
    if value != "model":
        raise ctx.refuse(
            field,
            f"{value!r}: only model batch deployments are supported (not pipeline component deployments)",
            "write the pipeline's scoring step as a model deployment with a scoring script",
        )


def _enum(target: str, values: dict[str, str]) -> Apply:
    def apply(ctx: Context, field: str, value: Any) -> None:
        if value not in values:
            raise ctx.refuse(field, f"{value!r} is not one of {sorted(values)}", "use one of those")
        ctx.set(target, values[value])

    return apply


def _string_to(target: str) -> Apply:
    return _to(target, _string)


# --- command jobs: ctx.spec holds the plan importer.py turns into a Job (render/command_job.py) ---

_LITERAL_TYPES = {"string", "integer", "number", "boolean"}
_DATA_TYPES = {"uri_folder", "uri_file"}


def _job_command(ctx: Context, field: str, value: Any) -> None:
    ctx.set("command", _string(ctx, field, value))


def _job_code(ctx: Context, field: str, value: Any) -> None:
    """The code folder -> a ConfigMap `<job>-code`, mounted as the command's working directory."""
    code = _string(ctx, field, value)
    if code.startswith("azureml:"):
        raise ctx.refuse(field, f"{code!r} is an Azure code asset", "point code at a local folder")
    files = _code_files(ctx, field, ctx.local_path(code))
    ctx.objects.append(_config_map(ctx, field, f"{ctx.name}-code", files))
    ctx.set("code", f"{ctx.name}-code")


def _literal(ctx: Context, field: str, value: Any) -> str:
    """A literal input as Azure writes it into the command line (booleans as True/False)."""
    if isinstance(value, bool | int | float | str):
        return str(value)
    raise ctx.refuse(field, f"{value!r} is not a literal value", "write a string, number or boolean")


def _job_inputs(ctx: Context, field: str, value: Any) -> None:
    """mlflow_model / custom_model / uri_folder / uri_file inputs are fetched by the model-inputs
    webhook; literals are written into the command, as Azure does."""
    models: dict[str, str] = {}
    files: dict[str, str] = {}
    literals: dict[str, str] = {}
    for name, item in _mapping(ctx, field, value).items():
        where = f"{field}.{name}"
        if not isinstance(item, dict):
            literals[str(name)] = _literal(ctx, where, item)
            continue
        kind = item.get("type", "uri_folder")
        if kind in _LITERAL_TYPES:
            if "value" not in item and "default" not in item:
                raise ctx.refuse(where, "a literal input without value or default", "write value: ...")
            literals[str(name)] = _literal(ctx, where, item.get("value", item.get("default")))
            continue
        if kind in ("mlflow_model", "custom_model"):
            path = item.get("path")
            uri = (
                _model_reference(ctx, f"{where}.path", path)
                if isinstance(path, str) and path.startswith("azureml:") and "://" not in path
                else _remote_input(ctx, f"{where}.path", path)
            )
            if kind == "custom_model":
                ctx.warn(
                    f"{where}.type", "custom_model: fetched as it is (a folder), as an mlflow_model input is"
                )
        elif kind in _DATA_TYPES:
            uri = _remote_input(ctx, f"{where}.path", item.get("path"))
            if kind == "uri_file":
                base = urllib.parse.urlparse(uri).path.rstrip("/").rsplit("/", 1)[-1]
                if not base:
                    raise ctx.refuse(f"{where}.path", f"{uri!r} names no file", "point path at the file")
                files[str(name)] = base
        else:
            raise ctx.refuse(
                f"{where}.type",
                f"{kind!r} inputs are not supported",
                "use mlflow_model, custom_model, uri_folder, uri_file or a literal value",
            )
        mode = item.get("mode")
        if mode not in (None, "ro_mount", "download", "rw_mount"):
            ctx.warn(f"{where}.mode", f"{mode!r}: the job gets a downloaded copy, read-only (as ro_mount)")
        for key in sorted(set(item) - {"type", "path", "mode", "description"}):
            ctx.warn(f"{where}.{key}", "not an Azure input field that mlendpoints uses: ignored")
        models[str(name)] = uri
    if models:
        ctx.set("inputs", models)
    if files:
        ctx.set("files", files)
    if literals:
        ctx.set("literals", literals)


def _remote_input(ctx: Context, field: str, path: Any) -> str:
    """What a model-inputs init container can fetch: object storage, https, or the MLflow registry."""
    text = _string(ctx, field, path)
    if _REMOTE_PATH.match(text) or text.startswith(("models:/", "runs:/")):
        return text
    local = ctx.local_path(text)
    if ctx.options.upload_to is not None and ":" not in text.split("/", 1)[0] and local.exists():
        # A local input, uploaded as Azure uploads it when the job is submitted.
        uploaded = upload_folder(local, ctx.options.upload_to, ctx.name)
        ctx.warn(field, f"the local {text!r} is uploaded to {uploaded}")
        return uploaded
    raise ctx.refuse(
        field,
        f"{text!r} is not in storage a pod can read (Azure data assets, datastores and local paths are not)",
        "upload it to s3://, gs://, abfss:// or https:// (--upload-to does it for a local path), or register "
        "the model in MLflow; point path there",
    )


def _job_outputs(ctx: Context, field: str, value: Any) -> None:
    names = []
    for name, item in _mapping(ctx, field, value).items():
        where = f"{field}.{name}"
        names.append(str(name))
        ctx.warn(
            where,
            f"a writable folder {OUTPUTS_ROOT}/{name} for the job's life only: it is not uploaded when "
            "the job ends (Azure's datastore outputs have no equivalent); have the command copy results "
            "to object storage",
        )
        for key in sorted(set(item or {}) - {"type", "mode"}) if isinstance(item, dict) else ():
            ctx.warn(f"{where}.{key}", "not used: the output is not uploaded")
    if names:
        ctx.set("outputs", names)


def _job_environment(ctx: Context, field: str, value: Any) -> None:
    image = value.get("image") if isinstance(value, dict) else None
    if isinstance(image, str) and not image.startswith(AZURE_BASE_IMAGES):
        ctx.set("image", image)
        for key in sorted(set(value) - {"image"}):
            ctx.warn(f"{field}.{key}", "not built or installed: the job runs the image as it is")
        return
    fallback = ctx.options.job_image
    if fallback is None:
        raise ctx.refuse(field, f"{value!r} is not an image", "pass --job-image IMAGE")
    ctx.set("image", fallback)
    ctx.warn(
        field,
        f"{value!r} is not an image a cluster can pull: the job runs {fallback} (mlendpoints' serving image: "
        "Python with mlflow and scikit-learn); for other packages build an image and pass --job-image",
    )


def _job_resources(ctx: Context, field: str, value: Any) -> None:
    spec = _mapping(ctx, field, value)
    count = spec.get("instance_count", 1)
    if _integer(ctx, f"{field}.instance_count", count) != 1:
        raise ctx.refuse(
            f"{field}.instance_count",
            f"{count}: distributed command jobs are not supported (one pod runs the command)",
            "set instance_count: 1, or score many files in parallel with a batch deployment",
        )
    for key in sorted(set(spec) - {"instance_count"}):
        hint = (
            f"to run on such nodes add a nodeSelector to the Job, e.g. node.kubernetes.io/instance-type: "
            f"{spec[key]}"
            if key == "instance_type"
            else "set the Job's container resources by hand"
        )
        ctx.warn(f"{field}.{key}", f"not imported: {hint}")


def _job_timeout(ctx: Context, field: str, value: Any) -> None:
    seconds = _integer(ctx, field, value)
    if seconds < 1:
        raise ctx.refuse(field, f"{seconds} is not a positive number of seconds", "write seconds, e.g. 3600")
    ctx.set("timeout", seconds)


def _job_annotation(key: str) -> Apply:
    def apply(ctx: Context, field: str, value: Any) -> None:
        ctx.annotations[key] = _string(ctx, field, value)

    return apply


def _refuse_with(message: str, hint: str) -> Apply:
    def apply(ctx: Context, field: str, value: Any) -> None:
        raise ctx.refuse(field, message.format(value=value), hint)

    return apply


# --- the table -------------------------------------------------------------------------------

ONLINE_DEPLOYMENT_PROBE_FIELDS = {
    "initial_delay": "initialDelay",
    "period": "period",
    "timeout": "timeout",
    "success_threshold": "successThreshold",
    "failure_threshold": "failureThreshold",
}
BATCH_SETTINGS = {
    "max_concurrency_per_instance": "maxConcurrencyPerInstance",
    "mini_batch_size": "miniBatchSize",
    "error_threshold": "errorThreshold",
    "retry_settings.max_retries": "retrySettings.maxRetries",
    "retry_settings.timeout": "retrySettings.timeout",
}
OUTPUT_ACTIONS = {"append_row": "appendRow", "summary_only": "summaryOnly"}
LOGGING_LEVELS = {level: level for level in ("debug", "info", "warning", "error")} | {"warn": "warning"}

_ONLINE_DEP = ONLINE_DEPLOYMENTS
_BATCH_DEP = frozenset({AzureKind.MODEL_BATCH_DEPLOYMENT})
_BATCH_EP = frozenset({AzureKind.BATCH_ENDPOINT})


def _batch_settings_rows(prefix: str) -> list[Row]:
    """Batch settings: under `settings.` (modelBatchDeployment), or at the top (the older batchDeployment)."""
    rows = [
        Row(_BATCH_DEP, prefix + azure, f"spec.settings.{ours}", _to(f"settings.{ours}"))
        for azure, ours in BATCH_SETTINGS.items()
    ]
    rows += [
        Row(
            _BATCH_DEP,
            prefix + "output_action",
            "spec.settings.outputAction",
            _enum("settings.outputAction", OUTPUT_ACTIONS),
        ),
        Row(
            _BATCH_DEP,
            prefix + "output_file_name",
            "spec.settings.outputFileName",
            _string_to("settings.outputFileName"),
        ),
        Row(
            _BATCH_DEP,
            prefix + "logging_level",
            "spec.settings.loggingLevel",
            _enum("settings.loggingLevel", LOGGING_LEVELS),
        ),
        Row(_BATCH_DEP, prefix + "environment_variables", "spec.env", _environment_variables),
    ]
    return rows


ROWS: tuple[Row, ...] = (
    # Every kind.
    Row(ALL_KINDS, "$schema", "(the kind)", _nothing),
    Row(ALL_KINDS, "name", "metadata.name", _nothing),
    Row(
        ALL_KINDS,
        "description",
        "spec.description (endpoints), annotation mlendpoints.io/description",
        _description,
    ),
    Row(
        ALL_KINDS,
        "tags",
        "metadata.labels (annotation mlendpoints.io/azureml-tags if not label syntax)",
        _tags,
    ),
    Row(ALL_KINDS, "properties", "annotation mlendpoints.io/azureml-properties", _properties),
    # Online endpoints.
    Row(ONLINE_ENDPOINTS, "auth_mode", "spec.authMode (key; tokens: token, warning)", _online_auth_mode),
    Row(ONLINE_ENDPOINTS, "traffic", "spec.traffic", _traffic("traffic")),
    Row(
        ONLINE_ENDPOINTS,
        "mirror_traffic",
        "spec.mirrorTraffic (0% entries: warning)",
        _traffic("mirrorTraffic"),
    ),
    Row(
        ONLINE_ENDPOINTS,
        "public_network_access",
        "warning (enabled): spec.service.type",
        _public_network_access,
    ),
    Row(
        ENDPOINTS | DEPLOYMENTS,
        "identity",
        "warning",
        _warn(
            "Azure managed identities do not exist here: give the pods a ServiceAccount "
            "(spec.serviceAccountName) with your cloud's workload identity, or credentials in a Secret"
        ),
    ),
    Row(
        frozenset({AzureKind.KUBERNETES_ONLINE_ENDPOINT}),
        "compute",
        "warning",
        _warn("{value!r}: the cluster you apply the resources to is the compute; nothing to set"),
    ),
    # Batch endpoints.
    Row(
        _BATCH_EP,
        "auth_mode",
        "warning",
        _warn(
            "{value!r}: batch jobs are BatchJob resources created through the Kubernetes API; who may create "
            "them is Kubernetes RBAC"
        ),
    ),
    Row(_BATCH_EP, "defaults", "spec.defaultDeployment (defaults.deployment_name)", _defaults),
    # Deployments, online and batch.
    Row(DEPLOYMENTS, "endpoint_name", "spec.endpointName", _string_to("endpointName")),
    Row(
        DEPLOYMENTS,
        "model",
        "spec.model (azureml:N:V -> models:/N/V, @latest -> /latest, path -> path)",
        _model,
    ),
    Row(
        DEPLOYMENTS,
        "code_configuration",
        "ConfigMap <name>-code + spec.codeConfiguration",
        _code_configuration,
    ),
    Row(DEPLOYMENTS, "environment", "spec.image (a non-Azure image), else warning", _environment),
    # Online deployments.
    Row(_ONLINE_DEP, "type", "(the kind: managed or kubernetes)", _nothing),
    Row(_ONLINE_DEP, "instance_count", "spec.instanceCount", _to("instanceCount")),
    Row(_ONLINE_DEP, "instance_type", "warning: spec.nodeSelector", _instance_type),
    Row(_ONLINE_DEP, "environment_variables", "spec.env", _environment_variables),
    Row(
        _ONLINE_DEP,
        "request_settings.request_timeout_ms",
        "spec.requestSettings.requestTimeoutMs",
        _to("requestSettings.requestTimeoutMs"),
    ),
    Row(
        _ONLINE_DEP,
        "request_settings.max_concurrent_requests_per_instance",
        "spec.requestSettings.maxConcurrentRequestsPerInstance",
        _to("requestSettings.maxConcurrentRequestsPerInstance"),
    ),
    Row(
        _ONLINE_DEP,
        "request_settings.max_queue_wait_ms",
        "spec.requestSettings.maxQueueWaitMs (deprecated in Azure; honoured here: the router holds a request "
        "this long for a free pod)",
        _to("requestSettings.maxQueueWaitMs"),
    ),
    *(
        Row(_ONLINE_DEP, f"{probe}_probe.{azure}", f"spec.{probe}Probe.{ours}", _to(f"{probe}Probe.{ours}"))
        for probe in ("liveness", "readiness")
        for azure, ours in ONLINE_DEPLOYMENT_PROBE_FIELDS.items()
    ),
    Row(
        _ONLINE_DEP,
        "scale_settings.type",
        "spec.scaleSettings.type (target_utilization -> targetUtilization)",
        _scale_type,
    ),
    Row(
        _ONLINE_DEP,
        "scale_settings.min_instances",
        "spec.scaleSettings.minInstances",
        _to("scaleSettings.minInstances"),
    ),
    Row(
        _ONLINE_DEP,
        "scale_settings.max_instances",
        "spec.scaleSettings.maxInstances",
        _to("scaleSettings.maxInstances"),
    ),
    Row(
        _ONLINE_DEP,
        "scale_settings.polling_interval",
        "spec.scaleSettings.pollingInterval",
        _to("scaleSettings.pollingInterval"),
    ),
    Row(
        _ONLINE_DEP,
        "scale_settings.target_utilization_percentage",
        "spec.scaleSettings.targetUtilizationPercentage",
        _to("scaleSettings.targetUtilizationPercentage"),
    ),
    Row(
        _ONLINE_DEP,
        "resources.requests",
        "spec.resources.requests (cpu, memory, nvidia.com/gpu)",
        _quantities("resources.requests"),
    ),
    Row(
        _ONLINE_DEP,
        "resources.limits",
        "spec.resources.limits (cpu, memory, nvidia.com/gpu)",
        _quantities("resources.limits"),
    ),
    Row(_ONLINE_DEP, "data_collector", "spec.dataCollector (destination: --collect-to)", _data_collector),
    Row(
        _ONLINE_DEP,
        "app_insights_enabled",
        "warning",
        _warn(
            "Application Insights is Azure's: scrape the server's and router's /metrics (Prometheus) instead"
        ),
    ),
    Row(
        _ONLINE_DEP,
        "egress_public_network_access",
        "warning",
        _warn("{value!r}: restrict the pods' egress with a Kubernetes NetworkPolicy instead"),
    ),
    # Batch deployments.
    Row(_BATCH_DEP, "type", "(the kind: model; pipeline: error)", _batch_type),
    Row(
        _BATCH_DEP,
        "compute",
        "warning: spec.nodeSelector",
        _warn(
            "{value!r}: jobs run as pods of the cluster you apply to; "
            "to pin them to nodes set spec.nodeSelector"
        ),
    ),
    Row(
        _BATCH_DEP, "resources.instance_count", "spec.resources.instanceCount", _to("resources.instanceCount")
    ),
    Row(_BATCH_DEP, "resources.instance_type", "warning: spec.nodeSelector", _instance_type),
    *_batch_settings_rows("settings."),
    *_batch_settings_rows(""),
    # Command jobs: a batch/v1 Job whose pod the model-inputs webhook fills in.
    Row(JOBS, "type", "(the kind: command)", _nothing),
    Row(
        JOBS,
        "command",
        "the container's command (sh -c), ${{inputs.X}} -> $(MLENDPOINTS_INPUT_X)",
        _job_command,
    ),
    Row(JOBS, "code", "a ConfigMap <job>-code, mounted as the working directory", _job_code),
    Row(
        JOBS,
        "inputs",
        "model inputs (label + annotation for the webhook); literals in the command",
        _job_inputs,
    ),
    Row(JOBS, "outputs", "emptyDirs under /var/mlendpoints/outputs (warning: not uploaded)", _job_outputs),
    Row(JOBS, "environment", "the container's image (else --job-image, warning)", _job_environment),
    Row(JOBS, "environment_variables", "the container's env", _environment_variables),
    Row(JOBS, "resources", "instance_count 1 (else refused); the rest: warning", _job_resources),
    Row(JOBS, "limits.timeout", "spec.activeDeadlineSeconds", _job_timeout),
    Row(
        JOBS,
        "display_name",
        "annotation mlendpoints.io/azureml-display-name",
        _job_annotation(ANNOTATION_DISPLAY_NAME),
    ),
    Row(
        JOBS,
        "experiment_name",
        "annotation mlendpoints.io/azureml-experiment-name",
        _job_annotation(ANNOTATION_EXPERIMENT_NAME),
    ),
    Row(
        JOBS,
        "compute",
        "warning: a nodeSelector",
        _warn("{value!r}: the job runs as a pod of the cluster you apply to; add a nodeSelector to pin it"),
    ),
    Row(
        JOBS,
        "distribution",
        "error",
        _refuse_with(
            "distributed training ({value!r}) is not supported", "run one process, or use a training operator"
        ),
    ),
    Row(
        JOBS,
        "identity",
        "warning",
        _warn("the pod runs with no service-account token; give it access by hand"),
    ),
)


def rows_for(kind: AzureKind) -> dict[str, Row]:
    return {row.azure: row for row in ROWS if kind in row.kinds}
