"""Model inputs for any pod: the pure mutation (render/model_inputs.py) and the mutating webhook that
applies it, driven through kopf's own admission machinery."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, cast

import jsonpatch
import kopf
import pytest
from kopf._cogs.structs import ids, references
from kopf._core.engines import admission, indexing
from kopf._core.reactor import inventory, observation

from mlendpoints.operator import models, webhook
from mlendpoints.operator.settings import OperatorSettings
from mlendpoints.render.common import RenderSettings
from mlendpoints.render.deployment import ResolvedModel
from mlendpoints.render.model_inputs import (
    FETCH_PREFIX,
    TMP_VOLUME,
    VOLUME_PREFIX,
    ModelInputError,
    env_name,
    inject_model_inputs,
    parse_model_inputs,
)
from mlendpoints_serving import contract

SETTINGS = RenderSettings(
    serving_image="mlendpoints/serving:dev",
    serving_image_gpu="mlendpoints/serving:dev-cuda",
    image_pull_policy="Never",
    mlflow_tracking_uri="http://mlflow.mlflow:5000",
    mlflow_credentials_secret="mlflow-credentials",
)
A = "annotation mlendpoints.io/models"  # how every error names the annotation
CHAMPION = "models:/diabetes/3"  # what the fake registry below pins models:/diabetes@champion to


def pod(inputs: dict[str, str] | str | None, **spec: Any) -> dict[str, Any]:
    annotations = (
        {}
        if inputs is None
        else {contract.ANNOTATION_MODELS: inputs if isinstance(inputs, str) else json.dumps(inputs)}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "evaluate-",
            "labels": {contract.LABEL_INJECT_MODELS: "true", "job-name": "evaluate"},
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11",
                    "command": ["python", "evaluate.py", "--model", "$(MLENDPOINTS_INPUT_MODEL)"],
                    "env": [{"name": "LOG_LEVEL", "value": "debug"}],
                    "resources": {"limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}},
                }
            ],
            **spec,
        },
    }


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


# -- the mutation ----------------------------------------------------------------------------------
def test_one_input_gets_a_fetch_an_emptydir_a_read_only_mount_and_both_env_vars() -> None:
    out = inject_model_inputs(pod({"model": "models:/diabetes@champion"}), {"model": CHAMPION}, SETTINGS)
    spec = out["spec"]
    [fetch] = spec["initContainers"]
    assert fetch["name"] == f"{FETCH_PREFIX}model"
    assert fetch["image"] == "mlendpoints/serving:dev"
    assert fetch["imagePullPolicy"] == "Never"
    assert fetch["command"] == ["mlendpoints-fetch"]
    # The pinned version is what is fetched, in input mode: a single file stays a file in the folder.
    assert fetch["args"] == [
        "--model-uri", CHAMPION,
        "--dest", "/var/mlendpoints/inputs/model",
        "--mode", contract.FETCH_MODE_INPUT,
    ]  # fmt: skip
    assert mounts_of(fetch)["/var/mlendpoints/inputs/model"]["name"] == f"{VOLUME_PREFIX}model"
    assert "readOnly" not in mounts_of(fetch)["/var/mlendpoints/inputs/model"]  # the fetch writes it
    assert mounts_of(fetch)["/tmp"]["name"] == TMP_VOLUME
    assert {"name": f"{VOLUME_PREFIX}model", "emptyDir": {}} in spec["volumes"]
    assert {"name": TMP_VOLUME, "emptyDir": {}} in spec["volumes"]
    [main] = spec["containers"]
    assert mounts_of(main)["/var/mlendpoints/inputs/model"] == {
        "name": f"{VOLUME_PREFIX}model", "mountPath": "/var/mlendpoints/inputs/model", "readOnly": True,
    }  # fmt: skip
    assert env_of(main) == {
        "MLENDPOINTS_INPUT_MODEL": "/var/mlendpoints/inputs/model",
        "AZUREML_MODEL_DIR": "/var/mlendpoints/inputs/model",
        "LOG_LEVEL": "debug",
    }
    # Ours come first, so the container's own entries may refer to them as $(MLENDPOINTS_INPUT_MODEL).
    assert [e["name"] for e in main["env"]][-1] == "LOG_LEVEL"
    assert main["command"] == ["python", "evaluate.py", "--model", "$(MLENDPOINTS_INPUT_MODEL)"]
    assert json.loads(out["metadata"]["annotations"][contract.ANNOTATION_RESOLVED_MODELS]) == {
        "model": CHAMPION
    }


def test_the_fetch_has_the_deployments_mlflow_settings_and_the_restricted_security_context() -> None:
    out = inject_model_inputs(pod({"model": "models:/diabetes/3"}), {"model": CHAMPION}, SETTINGS)
    [fetch] = out["spec"]["initContainers"]
    assert env_of(fetch) == {
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "MLFLOW_TRACKING_URI": "http://mlflow.mlflow:5000",
    }
    assert fetch["envFrom"] == [{"secretRef": {"name": "mlflow-credentials", "optional": True}}]
    assert fetch["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # cpu and memory of the first container (a quota demanding limits admits it); no GPU.
    assert fetch["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"}}


def test_without_tracking_settings_the_fetch_gets_no_mlflow_env_and_no_resources() -> None:
    bare = RenderSettings(serving_image="img", serving_image_gpu="img-gpu")
    p = pod({"data": "s3://bucket/data.npy"})
    del p["spec"]["containers"][0]["resources"]
    [fetch] = inject_model_inputs(p, {"data": "s3://bucket/data.npy"}, bare)["spec"]["initContainers"]
    assert env_of(fetch) == {"HOME": "/tmp", "TMPDIR": "/tmp"}
    assert "envFrom" not in fetch
    assert "resources" not in fetch


def test_two_inputs_get_two_fetches_and_no_azureml_model_dir() -> None:
    resolved = {"model": CHAMPION, "baseline": "runs:/0123456789abcdef/model"}
    out = inject_model_inputs(
        pod({"model": "models:/diabetes@champion", "baseline": resolved["baseline"]}), resolved, SETTINGS
    )
    spec = out["spec"]
    assert [c["name"] for c in spec["initContainers"]] == [f"{FETCH_PREFIX}baseline", f"{FETCH_PREFIX}model"]
    assert [v["name"] for v in spec["volumes"]] == [
        f"{VOLUME_PREFIX}baseline",
        f"{VOLUME_PREFIX}model",
        TMP_VOLUME,
    ]
    [main] = spec["containers"]
    assert env_of(main) == {
        "MLENDPOINTS_INPUT_BASELINE": "/var/mlendpoints/inputs/baseline",
        "MLENDPOINTS_INPUT_MODEL": "/var/mlendpoints/inputs/model",
        "LOG_LEVEL": "debug",
    }
    assert all(mounts_of(main)[f"/var/mlendpoints/inputs/{n}"]["readOnly"] for n in ("model", "baseline"))
    assert json.loads(out["metadata"]["annotations"][contract.ANNOTATION_RESOLVED_MODELS]) == resolved


@pytest.mark.parametrize(
    ("name", "env"),
    [
        ("model", "MLENDPOINTS_INPUT_MODEL"),
        ("text-encoder", "MLENDPOINTS_INPUT_TEXT_ENCODER"),
        ("v2", "MLENDPOINTS_INPUT_V2"),
    ],
)
def test_env_names_are_upper_case_with_underscores(name: str, env: str) -> None:
    assert env_name(name) == env
    out = inject_model_inputs(pod({name: "s3://b/m"}), {name: "s3://b/m"}, SETTINGS)
    assert env_of(out["spec"]["containers"][0])[env] == f"/var/mlendpoints/inputs/{name}"


def test_every_container_and_the_pods_own_init_containers_see_the_inputs() -> None:
    p = pod(
        {"model": "s3://b/m"},
        initContainers=[{"name": "prepare", "image": "busybox"}],
    )
    p["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    out = inject_model_inputs(p, {"model": "s3://b/m"}, SETTINGS)
    for container in [*out["spec"]["containers"], out["spec"]["initContainers"][1]]:
        assert mounts_of(container)["/var/mlendpoints/inputs/model"]["readOnly"] is True, container["name"]
        assert env_of(container)["MLENDPOINTS_INPUT_MODEL"] == "/var/mlendpoints/inputs/model"


def test_fetches_run_after_native_sidecars_and_before_the_pods_other_init_containers() -> None:
    """A mesh proxy (a native sidecar) must be up for the fetch's network; the pod's own init
    containers (pre-processing) may need the inputs, so they run after the fetches."""
    p = pod(
        {"model": "s3://b/m"},
        initContainers=[
            {"name": "mesh-init", "image": "mesh"},
            {"name": "mesh-proxy", "image": "mesh", "restartPolicy": "Always"},
            {"name": "prepare", "image": "busybox"},
        ],
    )
    out = inject_model_inputs(p, {"model": "s3://b/m"}, SETTINGS)
    assert [c["name"] for c in out["spec"]["initContainers"]] == [
        "mesh-init", "mesh-proxy", f"{FETCH_PREFIX}model", "prepare",
    ]  # fmt: skip
    # Without sidecars: first.
    p = pod({"model": "s3://b/m"}, initContainers=[{"name": "prepare", "image": "busybox"}])
    out = inject_model_inputs(p, {"model": "s3://b/m"}, SETTINGS)
    assert [c["name"] for c in out["spec"]["initContainers"]] == [f"{FETCH_PREFIX}model", "prepare"]


def test_mutating_twice_gives_the_same_pod() -> None:
    resolved = {"model": CHAMPION, "baseline": "runs:/0123456789abcdef/model"}
    p = pod(
        {"model": "models:/diabetes@champion", "baseline": resolved["baseline"]},
        initContainers=[{"name": "prepare", "image": "busybox"}],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    once = inject_model_inputs(p, resolved, SETTINGS)
    assert inject_model_inputs(once, resolved, SETTINGS) == once
    one = {"model": CHAMPION}
    once = inject_model_inputs(pod({"model": "models:/diabetes@champion"}), one, SETTINGS)
    assert inject_model_inputs(once, one, SETTINGS) == once


def test_the_input_pod_is_not_modified() -> None:
    p = pod({"model": "s3://b/m"})
    before = json.dumps(p, sort_keys=True)
    inject_model_inputs(p, {"model": "s3://b/m"}, SETTINGS)
    assert json.dumps(p, sort_keys=True) == before


def test_an_azureml_model_dir_the_user_set_is_kept() -> None:
    p = pod({"model": "s3://b/m"})
    p["spec"]["containers"][0]["env"].append({"name": "AZUREML_MODEL_DIR", "value": "/models/mine"})
    out = inject_model_inputs(p, {"model": "s3://b/m"}, SETTINGS)
    assert env_of(out["spec"]["containers"][0])["AZUREML_MODEL_DIR"] == "/models/mine"
    assert [e["name"] for e in out["spec"]["containers"][0]["env"]].count("AZUREML_MODEL_DIR") == 1


# -- validation of the annotation ------------------------------------------------------------------
def test_the_annotation_parses_to_its_inputs() -> None:
    inputs = {"model": "models:/diabetes@champion", "baseline": "runs:/0123456789abcdef/model"}
    assert parse_model_inputs({contract.ANNOTATION_MODELS: json.dumps(inputs)}) == inputs


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (None, f"{A} is missing"),
        ('{"model": "models:/diabetes@champion"', f"{A} is not valid JSON"),
        ('["models:/diabetes/1"]', f"{A} must be a non-empty JSON object"),
        ("{}", f"{A} must be a non-empty JSON object"),
        ('{"Model_1": "models:/diabetes/1"}', f"{A}, input 'Model_1': the name must be a DNS label"),
        ('{"' + "m" * 46 + '": "models:/d/1"}', f"'{'m' * 46}': the name must be a DNS label of at most 45"),
        ('{"model": 3}', f"{A}, input 'model': the model URI must be a string, got 3"),
        ('{"model": "models:/diabetes"}', f"{A}, input 'model': 'models:/diabetes' is not a registry URI"),
        ('{"model": "runs:/abc"}', f"{A}, input 'model': 'runs:/abc' is not a run URI"),
        ('{"model": "ftp://host/model"}', f"{A}, input 'model': 'ftp://host/model' is not a model URI"),
    ],
)  # fmt: skip
def test_a_bad_annotation_is_refused_naming_the_annotation_and_the_input(
    annotation: str | None, message: str
) -> None:
    with pytest.raises(ModelInputError) as caught:
        parse_model_inputs({} if annotation is None else {contract.ANNOTATION_MODELS: annotation})
    assert message in str(caught.value)


def test_every_bad_input_is_named_at_once() -> None:
    with pytest.raises(ModelInputError) as caught:
        parse_model_inputs(
            {contract.ANNOTATION_MODELS: '{"a": "models:/x", "B": "s3://b/m", "ok": "s3://b/m"}'}
        )
    assert "input 'a'" in str(caught.value)
    assert "input 'B'" in str(caught.value)
    assert "input 'ok'" not in str(caught.value)


# -- the webhook, through kopf ---------------------------------------------------------------------
async def fake_registry(uri: str, tracking_uri: str | None) -> ResolvedModel:
    """The registry as models.resolve answers: aliases pinned, unknown ones refused, others as given."""
    if models.needs_registry(uri):
        assert tracking_uri == "http://mlflow.mlflow:5000"
    if uri == "models:/diabetes@champion":
        return ResolvedModel(CHAMPION, "3")
    if uri == "models:/slow@champion":
        await asyncio.sleep(3600)
    if uri.startswith("models:/") and "@" in uri:
        raise models.ResolveError(f"{uri}: Registered model alias champion not found.")
    return ResolvedModel(uri)


def operator_settings(**overrides: Any) -> OperatorSettings:
    fields: dict[str, Any] = {
        "serving_image": "mlendpoints/serving:dev",
        "image_pull_policy": "Never",
        "mlflow_tracking_uri": "http://mlflow.mlflow:5000",
        "mlflow_credentials_secret": "mlflow-credentials",
        **overrides,
    }
    return OperatorSettings(**fields)


CORE_RESOURCES = [
    references.Resource("", "v1", "pods", kind="Pod", namespaced=True, verbs=frozenset({"create", "list"})),
    references.Resource("", "v1", "configmaps", kind="ConfigMap", namespaced=True),
]


def registry_and_insights(settings: OperatorSettings) -> tuple[kopf.OperatorRegistry, references.Insights]:
    registry = kopf.OperatorRegistry()
    webhook.register_model_inputs(registry, settings, resolve=fake_registry)
    insights = references.Insights()
    # What kopf's resource observer does with the cluster's discovery of the core group.
    observation.revise_resources(group="", insights=insights, registry=registry, resources=CORE_RESOURCES)
    return registry, insights


def admit(p: dict[str, Any], settings: OperatorSettings | None = None) -> dict[str, Any]:
    """kopf's answer to the API server's AdmissionReview for creating `p`."""
    registry, insights = registry_and_insights(settings or operator_settings())
    request = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "ml",
            "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
            "object": p,
        },
    }
    response = asyncio.run(
        admission.serve_admission_request(
            request,  # type: ignore[arg-type]
            webhook=ids.HandlerId("inject-model-inputs"),  # the path kopf registered for the handler
            settings=kopf.OperatorSettings(),
            memories=inventory.ResourceMemories(),
            memobase=cast(Any, kopf.Memo()),
            registry=registry,
            insights=insights,
            indices=indexing.OperatorIndexers().indices,
        )
    )
    return dict(response["response"])


def test_kopf_registers_a_failing_webhook_for_labelled_pod_creations_only() -> None:
    """objectSelector: the API server never calls the webhook for unlabelled pods, so its failures
    cannot block them; for labelled pods, Fail (a pod without its inputs would run without its model)."""
    registry, insights = registry_and_insights(operator_settings())
    assert {r.plural for r in insights.webhook_resources} == {"pods"}
    [config] = admission.build_webhooks(
        registry._webhooks.get_all_handlers(),
        resources=insights.webhook_resources,
        name_suffix=webhook.CONFIGURATION_NAME,
        client_config={"service": {"name": "op", "namespace": "ns", "path": ""}},
    )
    assert config["objectSelector"] == {
        "matchExpressions": [{"key": contract.LABEL_INJECT_MODELS, "operator": "In", "values": ["true"]}]
    }
    assert config["failurePolicy"] == "Fail"
    assert config["sideEffects"] == "None"
    assert config["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "*",
        }
    ]
    assert config["clientConfig"]["service"]["path"] == "/inject-model-inputs"
    # Persistent: kept registered while a replica hands over, so labelled pods are never let through bare.
    assert [h.persistent for h in registry._webhooks.get_all_handlers()] == [True]


def test_the_webhook_answers_with_a_json_patch_giving_the_mutated_pod_and_the_pinned_version() -> None:
    p = pod({"model": "models:/diabetes@champion"})
    response = admit(p)
    assert response["allowed"] is True, response
    assert response["patchType"] == "JSONPatch"
    patched = jsonpatch.apply_patch(p, json.loads(base64.b64decode(response["patch"])))
    assert patched == inject_model_inputs(p, {"model": CHAMPION}, SETTINGS)
    assert json.loads(patched["metadata"]["annotations"][contract.ANNOTATION_RESOLVED_MODELS]) == {
        "model": CHAMPION
    }
    assert patched["spec"]["initContainers"][0]["args"][1] == CHAMPION


def test_the_webhook_leaves_an_unlabelled_pod_alone() -> None:
    """Were the API server to call it anyway (a hand-made configuration without the objectSelector),
    kopf's label filter runs no handler: allowed, no patch."""
    p = pod({"model": "models:/diabetes@champion"})
    p["metadata"]["labels"] = {"job-name": "evaluate"}
    response = admit(p)
    assert response["allowed"] is True
    assert "patch" not in response


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ('{"model": "models:/diabetes"', f"{A} is not valid JSON"),
        ('{"model": "models:/diabetes@retired"}',
         f"{A}, input 'model': cannot resolve models:/diabetes@retired: Registered model alias champion"),
        ('{"model": "models:/slow@champion"}', f"{A}, input 'model': the MLflow registry did not resolve "
         "models:/slow@champion within 0 s"),
    ],
)  # fmt: skip
def test_the_webhook_refuses_the_pod_with_the_reason(
    inputs: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "RESOLVE_TIMEOUT_S", 0.05)
    response = admit(pod(inputs))
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert message in response["status"]["message"]


def test_a_registry_uri_without_a_tracking_server_is_refused_by_name() -> None:
    response = admit(pod({"model": "models:/diabetes@champion"}), operator_settings(mlflow_tracking_uri=None))
    assert response["allowed"] is False
    assert (
        "input 'model': models:/diabetes@champion needs the MLflow registry" in response["status"]["message"]
    )
    # A pinned version or another store needs no registry at admission.
    response = admit(
        pod({"model": "models:/diabetes/3", "data": "s3://b/d"}), operator_settings(mlflow_tracking_uri=None)
    )
    assert response["allowed"] is True


def test_the_example_job_opts_in_and_its_command_names_a_variable_the_mutation_sets() -> None:
    import yaml

    example = Path(__file__).resolve().parents[3] / "examples" / "model-input-job.yaml"
    template = yaml.safe_load(example.read_text())["spec"]["template"]
    assert template["metadata"]["labels"][contract.LABEL_INJECT_MODELS] == "true"
    inputs = parse_model_inputs(template["metadata"]["annotations"])
    assert inputs == {"model": "models:/diabetes@champion"}
    out = inject_model_inputs(
        {"metadata": template["metadata"], "spec": template["spec"]}, {"model": CHAMPION}, SETTINGS
    )
    [container] = out["spec"]["containers"]
    assert container["command"][-1] == "$(MLENDPOINTS_INPUT_MODEL)"
    assert env_of(container)["MLENDPOINTS_INPUT_MODEL"] == "/var/mlendpoints/inputs/model"
