"""Model inputs for any pod: the mutation the operator's webhook applies to an opted-in Pod. Pure.

A pod labelled `mlendpoints.io/inject-models: "true"` names its inputs in the annotation
`mlendpoints.io/models` (JSON `{"model": "models:/diabetes@champion", ...}`). For each input the pod
gets an emptyDir, an init container running `mlendpoints-fetch --mode input` into it (with the MLflow
settings deployments get), the directory mounted read-only at `/var/mlendpoints/inputs/<name>` in
every container, and `MLENDPOINTS_INPUT_<NAME>` pointing at it (`AZUREML_MODEL_DIR` too when there
is one input). The URIs actually fetched (registry aliases pinned to a version by the caller) are
recorded in `mlendpoints.io/resolved-models`, so a rerun can be reproduced.

Mutating an already-mutated pod gives the same pod: everything this module adds is recognised by
name and replaced, never appended twice.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping

from mlendpoints.api.common import DNS_LABEL
from mlendpoints.api.validation import validate_model_uri
from mlendpoints.render.common import (
    CONTAINER_SECURITY_CONTEXT,
    TMP_DIR,
    Object,
    RenderSettings,
    credentials,
)
from mlendpoints_serving import contract

FETCH_PREFIX = "mlendpoints-fetch-"  # + input name: the init container of that input
VOLUME_PREFIX = "mlendpoints-input-"  # + input name: its emptyDir
TMP_VOLUME = "mlendpoints-inputs-tmp"  # the fetches' scratch space: their root filesystem is read-only
# The object-store key file (GCS), under a name of ours: the pod's own volumes keep theirs.
CREDENTIALS_VOLUME = "mlendpoints-inputs-credentials"
# Container and volume names are DNS labels of at most 63 characters, prefix included.
MAX_INPUT_NAME = 63 - max(len(FETCH_PREFIX), len(VOLUME_PREFIX))
# What the fetch containers copy from the pod's first container's resources: a namespace quota that
# demands limits then admits them, and the pod's effective request (the larger of its biggest init
# container and the sum of its containers) does not grow. Accelerators are not copied.
COPIED_RESOURCES = ("cpu", "memory", "ephemeral-storage")


class ModelInputError(ValueError):
    """The pod's model inputs cannot be injected; the message names the annotation and the input."""


def input_dir(name: str) -> str:
    return f"{contract.INPUTS_ROOT}/{name}"


def env_name(name: str) -> str:
    """MLENDPOINTS_INPUT_<NAME>: upper case, every character that is not a letter or digit '_'."""
    return contract.ENV_PREFIX_INPUT + re.sub(r"[^A-Z0-9]", "_", name.upper())


def parse_model_inputs(annotations: Mapping[str, str] | None) -> dict[str, str]:
    """The pod's inputs (name -> URI) from its `mlendpoints.io/models` annotation, every error at once."""
    where = f"annotation {contract.ANNOTATION_MODELS}"
    raw = (annotations or {}).get(contract.ANNOTATION_MODELS)
    if raw is None:
        raise ModelInputError(
            f"{where} is missing: a pod labelled {contract.LABEL_INJECT_MODELS}=true names its model "
            'inputs there, as JSON {"model": "models:/NAME@ALIAS"}'
        )
    try:
        inputs = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelInputError(f"{where} is not valid JSON ({exc}): {raw!r}") from None
    if not isinstance(inputs, dict) or not inputs:
        raise ModelInputError(
            f'{where} must be a non-empty JSON object of input name to model URI, e.g. {{"model": '
            f'"models:/NAME@ALIAS"}}; got {raw!r}'
        )
    errors: list[str] = []
    for name, uri in inputs.items():
        field = f"{where}, input {name!r}"
        if not re.fullmatch(DNS_LABEL, name) or len(name) > MAX_INPUT_NAME:
            errors.append(
                f"{field}: the name must be a DNS label of at most {MAX_INPUT_NAME} characters "
                "(lower-case letters, digits and '-')"
            )
        if not isinstance(uri, str):
            errors.append(f"{field}: the model URI must be a string, got {json.dumps(uri)}")
        else:
            errors += validate_model_uri(uri, field=field)
    if errors:
        raise ModelInputError("; ".join(errors))
    return inputs


def _fetch_container(name: str, uri: str, first: Object | None, settings: RenderSettings) -> Object:
    creds = credentials(settings)
    mlflow_env, env_from = creds.env, creds.env_from
    resources = (first or {}).get("resources") or {}
    copied = {
        kind: {k: v for k, v in (resources.get(kind) or {}).items() if k in COPIED_RESOURCES}
        for kind in ("requests", "limits")
    }
    container: Object = {
        "name": FETCH_PREFIX + name,
        "image": settings.serving_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mlendpoints-fetch"],
        "args": ["--model-uri", uri, "--dest", input_dir(name), "--mode", contract.FETCH_MODE_INPUT],
        "env": [{"name": "HOME", "value": TMP_DIR}, {"name": "TMPDIR", "value": TMP_DIR}, *mlflow_env],
        "volumeMounts": [
            {"name": VOLUME_PREFIX + name, "mountPath": input_dir(name)},
            {"name": TMP_VOLUME, "mountPath": TMP_DIR},
            *({**m, "name": CREDENTIALS_VOLUME} for m in creds.mounts),
        ],
        # The pod's own security context is the user's and may allow root: this container carries
        # the restricted profile itself (non-root, no privilege escalation, no capabilities,
        # read-only root filesystem, RuntimeDefault seccomp), like every container the operator renders.
        "securityContext": {
            **CONTAINER_SECURITY_CONTEXT,
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The fetch writes its one-line reason to /dev/termination-log; the logs' tail otherwise.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        container["envFrom"] = env_from
    if any(copied.values()):
        container["resources"] = {kind: value for kind, value in copied.items() if value}
    return container


def _with_inputs(container: Object, names: list[str]) -> Object:
    """`container` with every input mounted read-only and its env vars, replacing earlier ones."""
    mounts = [
        m for m in container.get("volumeMounts") or [] if not m.get("name", "").startswith(VOLUME_PREFIX)
    ]
    mounts += [{"name": VOLUME_PREFIX + n, "mountPath": input_dir(n), "readOnly": True} for n in names]
    ours = [{"name": env_name(n), "value": input_dir(n)} for n in names]
    env = [
        e for e in container.get("env") or [] if not e.get("name", "").startswith(contract.ENV_PREFIX_INPUT)
    ]
    azure = next((e for e in env if e.get("name") == contract.ENV_AZUREML_MODEL_DIR), None)
    # AZUREML_MODEL_DIR: one a user set is theirs and stays; one this module set (a path under the
    # inputs' root) follows the inputs.
    ours_azure = azure is not None and str(azure.get("value", "")).startswith(contract.INPUTS_ROOT + "/")
    if ours_azure:
        env.remove(azure)  # type: ignore[arg-type]
    if len(names) == 1 and (azure is None or ours_azure):
        ours.append({"name": contract.ENV_AZUREML_MODEL_DIR, "value": input_dir(names[0])})
    # First, so that the container's own env entries may refer to them as $(MLENDPOINTS_INPUT_X).
    return {**container, "volumeMounts": mounts, "env": ours + env}


def inject_model_inputs(pod: Object, resolved: Mapping[str, str], settings: RenderSettings) -> Object:
    """The pod with its inputs injected; `resolved` maps each input's name to the URI to fetch.

    Fetch containers go after the pod's native sidecars (init containers with restartPolicy Always,
    e.g. a service mesh's proxy, which the fetch's network may need) and before its other init
    containers, which may then read the inputs like the main containers do.
    """
    out = copy.deepcopy(pod)
    meta = out.setdefault("metadata", {})
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        contract.ANNOTATION_RESOLVED_MODELS: json.dumps(dict(resolved), sort_keys=True),
    }
    spec = out.setdefault("spec", {})
    names = sorted(resolved)
    containers = spec.get("containers") or []
    theirs = [c for c in spec.get("initContainers") or [] if not c.get("name", "").startswith(FETCH_PREFIX)]
    sidecars = max((i + 1 for i, c in enumerate(theirs) if c.get("restartPolicy") == "Always"), default=0)
    first = containers[0] if containers else None
    fetches = [_fetch_container(n, resolved[n], first, settings) for n in names]
    init = [_with_inputs(c, names) for c in theirs]
    spec["initContainers"] = init[:sidecars] + fetches + init[sidecars:]
    spec["containers"] = [_with_inputs(c, names) for c in containers]
    volumes = [
        v
        for v in spec.get("volumes") or []
        if not (
            v.get("name", "").startswith(VOLUME_PREFIX) or v.get("name") in (TMP_VOLUME, CREDENTIALS_VOLUME)
        )
    ]
    spec["volumes"] = volumes + [{"name": VOLUME_PREFIX + n, "emptyDir": {}} for n in names]
    spec["volumes"].append({"name": TMP_VOLUME, "emptyDir": {}})
    spec["volumes"] += [{**v, "name": CREDENTIALS_VOLUME} for v in credentials(settings).volumes]
    return out
