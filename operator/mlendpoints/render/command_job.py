"""`mlendpoints job run`: a command with model inputs -> a batch/v1 Job the model-inputs webhook serves. Pure.

Azure ML's command jobs name their inputs `${{inputs.NAME}}` in the command line; here each
becomes Kubernetes' own expansion `$(MLENDPOINTS_INPUT_NAME)`, which the kubelet fills from the
env var the operator's mutating webhook sets (the input's directory). The Job's pod template opts
in with the label `mlendpoints.io/inject-models: "true"` and names its inputs in the annotation
`mlendpoints.io/models`; everything else about fetching is the webhook's (render/model_inputs.py).

The pod is restricted-PSS clean: non-root (uid 1000 unless told otherwise), no privilege
escalation, no capabilities, RuntimeDefault seccomp, a read-only root filesystem with `/tmp` an
emptyDir (and HOME), no service-account token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from mlendpoints.render.common import CODE_DIR, TMP_DIR, Object
from mlendpoints.render.model_inputs import env_name, parse_model_inputs
from mlendpoints_serving import contract

MAIN_CONTAINER = "main"
LABEL_COMMAND_JOB = "mlendpoints.io/command-job"  # on the Job and its pods: made by `mlendpoints job run`
INPUT_REF = re.compile(r"\$\{\{\s*inputs\.([A-Za-z0-9_.-]+)\s*\}\}")
OUTPUTS_ROOT = "/var/mlendpoints/outputs"  # an imported Azure job's outputs: emptyDirs, one per output


class CommandJobError(ValueError):
    """The command or its inputs cannot make a Job; the message names what is wrong."""


def rewrite_inputs(arg: str, inputs: Mapping[str, str]) -> str:
    """`${{inputs.NAME}}` -> `$(MLENDPOINTS_INPUT_NAME)`; a name that is not an input is refused."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise CommandJobError(
                f"{match.group(0)} names no input (inputs: {known}); add --input {name}=URI"
            )
        return f"$({env_name(name)})"

    return INPUT_REF.sub(replace, arg)


def render_command_job(
    image: str,
    command: Sequence[str],
    inputs: Mapping[str, str],
    *,
    namespace: str | None = None,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    retries: int = 0,
    run_as_user: int = 1000,
    image_pull_policy: str = "IfNotPresent",
    resources: Mapping[str, Mapping[str, str]] | None = None,
    code_config_map: str | None = None,
    outputs: Sequence[str] = (),
    active_deadline_seconds: int | None = None,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Object:
    """The Job; with no `name` it gets `metadata.generateName` (`mlendpoints-job-`).

    `code_config_map` is mounted read-only at CODE_DIR, the command's working directory (Azure's
    `code`); each of `outputs` is an emptyDir at OUTPUTS_ROOT/<name>, writable under the read-only root.
    """
    if not command:
        raise CommandJobError(
            "no command: put it after --, e.g. -- python evaluate.py --model '${{inputs.model}}'"
        )
    if inputs:  # the webhook's own rules (names, URIs), so a refusal comes before anything is created
        try:
            parse_model_inputs({contract.ANNOTATION_MODELS: json.dumps(dict(inputs))})
        except ValueError as exc:
            raise CommandJobError(
                str(exc).replace(f"annotation {contract.ANNOTATION_MODELS}, ", "--")
            ) from None
    args = [rewrite_inputs(a, inputs) for a in command]
    labels = {**(labels or {}), LABEL_COMMAND_JOB: "true"}
    template_meta: Object = {"labels": dict(labels)}
    if inputs:
        template_meta["labels"][contract.LABEL_INJECT_MODELS] = "true"
        template_meta["annotations"] = {contract.ANNOTATION_MODELS: json.dumps(dict(inputs), sort_keys=True)}
    container: Object = {
        "name": MAIN_CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": args,
        "env": [
            {"name": "HOME", "value": TMP_DIR},
            {"name": "TMPDIR", "value": TMP_DIR},
            *({"name": k, "value": v} for k, v in (env or {}).items()),
        ],
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources:
        container["resources"] = {k: dict(v) for k, v in resources.items()}
    volumes: list[Object] = [{"name": "tmp", "emptyDir": {}}]
    if code_config_map:
        volumes.append({"name": "code", "configMap": {"name": code_config_map}})
        container["volumeMounts"].append({"name": "code", "mountPath": CODE_DIR, "readOnly": True})
        container["workingDir"] = CODE_DIR
    for index, output in enumerate(outputs):  # volume names are DNS labels; output names need not be
        volumes.append({"name": f"output-{index}", "emptyDir": {}})
        container["volumeMounts"].append({"name": f"output-{index}", "mountPath": f"{OUTPUTS_ROOT}/{output}"})
    metadata: Object = {"labels": labels}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if namespace:
        metadata["namespace"] = namespace
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = "mlendpoints-job-"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": retries,
            **({"activeDeadlineSeconds": active_deadline_seconds} if active_deadline_seconds else {}),
            "template": {
                "metadata": template_meta,
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": run_as_user,
                        "runAsGroup": run_as_user,
                        "fsGroup": run_as_user,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
