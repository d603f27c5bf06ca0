"""`mlendpoints import azureml`: every row of the mapping table, the findings, the refusals, the corpus."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlendpoints.azureml import import_document, import_file, is_azure_document, to_yaml
from mlendpoints.azureml.context import AzureKind, ImportOptions, ImportRefused
from mlendpoints.azureml.table import ANNOTATION_DESCRIPTION, ANNOTATION_PROPERTIES, ANNOTATION_TAGS, ROWS
from mlendpoints.cli.app import cli
from mlendpoints.local import manifests
from mlendpoints.operator.settings import PUBLIC_SERVING_IMAGE
from tests.fixtures.azureml import copy_corpus, corpus_files, resource_errors

SCHEMA = "https://azuremlschemas.azureedge.net/latest/{}.schema.json"
BASE: dict[AzureKind, dict[str, Any]] = {
    AzureKind.MANAGED_ONLINE_ENDPOINT: {"name": "ep"},
    AzureKind.KUBERNETES_ONLINE_ENDPOINT: {"name": "ep"},
    AzureKind.MANAGED_ONLINE_DEPLOYMENT: {"name": "blue", "endpoint_name": "ep", "model": "azureml:m:1"},
    AzureKind.KUBERNETES_ONLINE_DEPLOYMENT: {"name": "blue", "endpoint_name": "ep", "model": "azureml:m:1"},
    AzureKind.BATCH_ENDPOINT: {"name": "be"},
    AzureKind.MODEL_BATCH_DEPLOYMENT: {"name": "bd", "endpoint_name": "be", "model": "azureml:m:1"},
    AzureKind.COMMAND_JOB: {"name": "job", "command": "echo hi", "environment": {"image": "python:3.11"}},
}
MOD = AzureKind.MANAGED_ONLINE_DEPLOYMENT
KOD = AzureKind.KUBERNETES_ONLINE_DEPLOYMENT
MOE = AzureKind.MANAGED_ONLINE_ENDPOINT
KOE = AzureKind.KUBERNETES_ONLINE_ENDPOINT
BE = AzureKind.BATCH_ENDPOINT
BD = AzureKind.MODEL_BATCH_DEPLOYMENT
CJ = AzureKind.COMMAND_JOB
JOB_IMAGE = "registry.example/serving:1"


def azure_doc(kind: AzureKind, fields: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": SCHEMA.format(kind.value), **BASE[kind], **fields}


COLLECT_TO = "s3://collected/records"
OPTIONS = ImportOptions(collect_to=COLLECT_TO, job_image=JOB_IMAGE)
MAIN = "template.spec.containers.0"  # a Job's container, for Case.spec paths


def run_import(tmp_path: Path, kind: AzureKind, fields: dict[str, Any]) -> Any:
    return import_document(tmp_path / "azure.yml", azure_doc(kind, fields), OPTIONS)


def dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


@dataclass(frozen=True)
class Case:
    kind: AzureKind
    fields: dict[str, Any]
    spec: dict[str, Any] = field(default_factory=dict)  # dotted spec path -> value
    findings: tuple[str, ...] = ()  # Azure fields reported as not carried over as they are
    metadata: dict[str, Any] = field(default_factory=dict)  # dotted metadata path -> value


PROBE = {"initial_delay": 3, "period": 4, "timeout": 5, "success_threshold": 6, "failure_threshold": 7}
PROBE_SPEC = {"initialDelay": 3, "period": 4, "timeout": 5, "successThreshold": 6, "failureThreshold": 7}
BATCH_SETTINGS = {
    "max_concurrency_per_instance": 3,
    "mini_batch_size": 4,
    "output_action": "summary_only",
    "output_file_name": "out.csv",
    "retry_settings": {"max_retries": 5, "timeout": 60},
    "error_threshold": 10,
    "logging_level": "debug",
    "environment_variables": {"A": 1},
}
BATCH_SPEC = {
    "settings.maxConcurrencyPerInstance": 3,
    "settings.miniBatchSize": 4,
    "settings.outputAction": "summaryOnly",
    "settings.outputFileName": "out.csv",
    "settings.retrySettings.maxRetries": 5,
    "settings.retrySettings.timeout": 60,
    "settings.errorThreshold": 10,
    "settings.loggingLevel": "debug",
    "env": [{"name": "A", "value": "1"}],
}

CASES: dict[str, Case] = {
    "endpoint-description": Case(MOE, {"description": "d"}, spec={"description": "d"}),
    "deployment-description": Case(
        MOD, {"description": "d"}, metadata={f"annotations.{ANNOTATION_DESCRIPTION}": "d"}
    ),
    "tags-as-labels": Case(
        BE,
        {"tags": {"team": "ml", "Owner Name": "Data Team"}},
        metadata={"labels.team": "ml", f"annotations.{ANNOTATION_TAGS}": '{"Owner Name": "Data Team"}'},
        findings=("tags",),
    ),
    "properties": Case(
        BD, {"properties": {"a": "b"}}, metadata={f"annotations.{ANNOTATION_PROPERTIES}": '{"a": "b"}'}
    ),
    "auth-key": Case(MOE, {"auth_mode": "key"}, spec={"authMode": "key", "modelErrors": "azureml"}),
    "traffic-and-mirror": Case(
        MOE,
        {"traffic": {"blue": 100, "green": 0}, "mirror_traffic": {"green": 20}},
        spec={"traffic": {"blue": 100, "green": 0}, "mirrorTraffic": {"green": 20}},
    ),
    "mirror-zero-left-out": Case(
        KOE, {"traffic": {"blue": 100}, "mirror_traffic": {"green": 0}}, findings=("mirror_traffic.green",)
    ),
    "public-network-access-enabled": Case(
        MOE, {"public_network_access": "enabled"}, findings=("public_network_access",)
    ),
    "public-network-access-disabled": Case(MOE, {"public_network_access": "disabled"}),
    "identity": Case(MOE, {"identity": {"type": "system_assigned"}}, findings=("identity",)),
    "kubernetes-compute": Case(KOE, {"compute": "azureml:k8s"}, findings=("compute",)),
    "batch-auth": Case(BE, {"auth_mode": "aad_token"}, findings=("auth_mode",)),
    "batch-defaults": Case(BE, {"defaults": {"deployment_name": "bd"}}, spec={"defaultDeployment": "bd"}),
    "endpoint-name": Case(MOD, {"endpoint_name": "other"}, spec={"endpointName": "other"}),
    "model-name-version": Case(MOD, {"model": "azureml:diabetes:3"}, spec={"model": "models:/diabetes/3"}),
    "model-latest": Case(
        KOD, {"model": "azureml:diabetes@latest"}, spec={"model": "models:/diabetes/latest"}
    ),
    "model-label-as-alias": Case(
        MOD,
        {"model": "azureml:diabetes@champion"},
        spec={"model": "models:/diabetes@champion"},
        findings=("model",),
    ),
    "model-registry-asset-id": Case(
        BD,
        {"model": "azureml://registries/azureml/models/diabetes/versions/4"},
        spec={"model": "models:/diabetes/4"},
        findings=("model",),
    ),
    "model-inline-name-version": Case(
        BD, {"model": {"name": "heart", "version": 2}}, spec={"model": "models:/heart/2"}
    ),
    "model-remote-path": Case(
        MOD,
        {"model": {"path": "s3://bucket/models/m", "type": "mlflow_model"}},
        spec={"model": "s3://bucket/models/m"},
    ),
    "custom-model": Case(
        MOD, {"model": {"path": "https://h/m", "type": "custom_model"}}, findings=("model.type",)
    ),
    "environment-curated": Case(
        MOD, {"environment": "azureml:AzureML-sklearn-1.0@latest"}, findings=("environment",)
    ),
    "environment-own-image": Case(
        KOD,
        {"environment": {"image": "registry.example.com/serving:1"}},
        spec={"image": "registry.example.com/serving:1"},
        findings=("environment.image",),
    ),
    "environment-azure-image-and-conda": Case(
        BD,
        {
            "environment": {
                "image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04",
                "conda_file": "c.yml",
                "build": {"path": "."},
                "inference_config": {},
                "name": "env",
            }
        },
        findings=(
            "environment.image",
            "environment.conda_file",
            "environment.build",
            "environment.inference_config",
            "environment.name",
        ),
    ),
    "instance-count": Case(MOD, {"instance_count": 3}, spec={"instanceCount": 3}),
    "instance-type": Case(MOD, {"instance_type": "Standard_DS3_v2"}, findings=("instance_type",)),
    "environment-variables": Case(
        MOD,
        {"environment_variables": {"A": "x", "B": 2, "C": None}},
        spec={"env": [{"name": "A", "value": "x"}, {"name": "B", "value": "2"}, {"name": "C", "value": ""}]},
    ),
    "request-settings": Case(
        MOD,
        {
            "request_settings": {
                "request_timeout_ms": 90,
                "max_concurrent_requests_per_instance": 2,
                "max_queue_wait_ms": 7,
            }
        },
        spec={
            "requestSettings": {
                "requestTimeoutMs": 90,
                "maxConcurrentRequestsPerInstance": 2,
                "maxQueueWaitMs": 7,
            }
        },
    ),
    "probes": Case(
        KOD,
        {"liveness_probe": PROBE, "readiness_probe": PROBE},
        spec={"livenessProbe": PROBE_SPEC, "readinessProbe": PROBE_SPEC},
    ),
    "scale-target-utilization": Case(
        KOD,
        {
            "scale_settings": {
                "type": "target_utilization",
                "min_instances": 2,
                "max_instances": 6,
                "polling_interval": 15,
                "target_utilization_percentage": 55,
            },
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"cpu": 1.5, "nvidia.com/gpu": 1},
            },
        },
        spec={
            "scaleSettings": {
                "type": "targetUtilization",
                "minInstances": 2,
                "maxInstances": 6,
                "pollingInterval": 15,
                "targetUtilizationPercentage": 55,
            },
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"cpu": "1.5", "nvidia.com/gpu": 1},
            },
        },
    ),
    "scale-default": Case(
        MOD, {"scale_settings": {"type": "default"}}, spec={"scaleSettings.type": "default"}
    ),
    "data-collector": Case(
        MOD,
        {
            "data_collector": {
                "collections": {
                    "request": {"enabled": "True"},
                    "model_outputs": {"enabled": True, "data": {"name": "out", "path": "azureml://x"}},
                    "model_inputs": {"enabled": "False"},
                    "my_features": {"enabled": "true"},
                },
                "sampling_rate": 0.25,
                "rolling_rate": "Day",
                "request_logging": {"capture_headers": ["x-team", "Authorization"]},
            }
        },
        spec={
            "dataCollector": {
                "destination": COLLECT_TO,
                "collections": {"request": {"enabled": True}, "response": {"enabled": True}},
                "samplingRate": 0.25,
                "rolling": "day",
                "headers": ["x-team"],
            }
        },
        findings=(
            "data_collector",  # where the records go, and the credentials they need
            "data_collector.collections.model_outputs",  # the response body stands for it
            "data_collector.collections.model_outputs.data",  # no Azure data asset
            "data_collector.collections.my_features",  # custom logging
            "data_collector.request_logging.capture_headers",  # Authorization left out
        ),
    ),
    "data-collector-minute": Case(
        KOD,
        {"data_collector": {"collections": {"model_inputs": {"enabled": "True"}}, "rolling_rate": "minute"}},
        spec={
            "dataCollector.collections": {"request": {"enabled": True}, "response": {"enabled": False}},
            "dataCollector.rolling": "hour",
        },
        findings=("data_collector", "data_collector.collections.model_inputs", "data_collector.rolling_rate"),
    ),
    "data-collector-nothing-enabled": Case(
        MOD,
        {"data_collector": {"collections": {"request": {"enabled": "False"}}}},
        findings=("data_collector",),
    ),
    "app-insights": Case(MOD, {"app_insights_enabled": True}, findings=("app_insights_enabled",)),
    "egress": Case(
        MOD, {"egress_public_network_access": "disabled"}, findings=("egress_public_network_access",)
    ),
    "online-type": Case(KOD, {"type": "kubernetes"}),
    "batch-type-model": Case(BD, {"type": "model"}),
    "batch-compute": Case(BD, {"compute": "azureml:cpu-cluster"}, findings=("compute",)),
    "batch-resources": Case(
        BD,
        {"resources": {"instance_count": 4, "instance_type": "Standard_D2"}},
        spec={"resources.instanceCount": 4},
        findings=("resources.instance_type",),
    ),
    "batch-settings": Case(BD, {"settings": BATCH_SETTINGS}, spec=BATCH_SPEC),
    # batchDeployment (the older schema) kept the settings at the top level.
    "batch-settings-top-level": Case(BD, BATCH_SETTINGS, spec=BATCH_SPEC),
    "batch-logging-warn": Case(
        BD, {"settings": {"logging_level": "warning"}}, spec={"settings.loggingLevel": "warning"}
    ),
    "job-command-and-model-inputs": Case(
        CJ,
        {
            "command": "python e.py --m ${{inputs.model}} --d ${{inputs.data}} --f ${{ inputs.file }} "
            "--a ${{inputs.alpha}} --b ${{inputs.flag}} --o ${{outputs.scores}}",
            "inputs": {
                "model": {"type": "mlflow_model", "path": "azureml:diabetes:3"},
                "data": {"type": "uri_folder", "path": "s3://bucket/data", "mode": "ro_mount"},
                "file": {"type": "uri_file", "path": "https://example.org/d/x.csv?sig=1", "mode": "direct"},
                "alpha": 0.5,
                "flag": {"type": "boolean", "value": True},
            },
            "outputs": {"scores": {"type": "uri_folder", "path": "azureml://datastores/x/paths/y"}},
            "environment_variables": {"LEVEL": 3},
        },
        spec={
            f"{MAIN}.command": [
                "/bin/sh",
                "-c",
                "python e.py --m $(MLENDPOINTS_INPUT_MODEL) --d $(MLENDPOINTS_INPUT_DATA) "
                "--f $(MLENDPOINTS_INPUT_FILE)/x.csv --a 0.5 --b True --o /var/mlendpoints/outputs/scores",
            ],
            f"{MAIN}.image": "python:3.11",
            f"{MAIN}.env.2": {"name": "LEVEL", "value": "3"},
            f"{MAIN}.volumeMounts.1": {"name": "output-0", "mountPath": "/var/mlendpoints/outputs/scores"},
            "template.metadata.labels": {
                "mlendpoints.io/command-job": "true",
                "mlendpoints.io/inject-models": "true",  # the webhook fetches the inputs
            },
            "template.metadata.annotations": {
                "mlendpoints.io/models": json.dumps(
                    {
                        "data": "s3://bucket/data",
                        "file": "https://example.org/d/x.csv?sig=1",
                        "model": "models:/diabetes/3",
                    },
                    sort_keys=True,
                )
            },
            "backoffLimit": 0,
        },
        findings=("inputs.file.mode", "outputs.scores", "outputs.scores.path"),
    ),
    "job-environment-not-an-image": Case(
        CJ,
        {"environment": "azureml:sklearn:1", "compute": "azureml:cpu", "identity": {"type": "managed"}},
        spec={f"{MAIN}.image": JOB_IMAGE},
        findings=("environment", "compute", "identity"),
    ),
    "job-metadata-and-limits": Case(
        CJ,
        {
            "display_name": "Evaluate",
            "experiment_name": "diabetes",
            "limits": {"timeout": 600},
            "resources": {"instance_count": 1, "instance_type": "Standard_D2"},
            "type": "command",
        },
        spec={"activeDeadlineSeconds": 600},
        metadata={
            "annotations.mlendpoints.io/azureml-display-name": "Evaluate",
            "annotations.mlendpoints.io/azureml-experiment-name": "diabetes",
        },
        findings=("resources.instance_type",),
    ),
    "unknown-field": Case(
        MOD,
        {"with_credential": True, "request_settings": {"mystery": 1}},
        findings=("with_credential", "request_settings.mystery"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_mapping_row(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    imported = run_import(tmp_path, case.kind, case.fields)
    resource = imported.resource
    for path, value in case.spec.items():
        assert dig(resource["spec"], path) == value, (path, resource["spec"])
    for path, value in case.metadata.items():
        head, _, key = path.partition(".")
        assert resource["metadata"][head][key] == value, resource["metadata"]
    reported = [f.field for f in imported.findings]
    assert sorted(reported) == sorted(case.findings), [f.line() for f in imported.findings]
    assert resource_errors(resource) == []


def _leaf_paths(doc: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict):
            paths |= _leaf_paths(value, path + ".")
    return paths


# Rows whose cases need files on disk: tested by the named test instead of a Case.
ROWS_TESTED_ELSEWHERE = {
    "code_configuration": "test_code_configuration_becomes_a_configmap",
    "code": "test_the_corpus_command_job_becomes_a_job_with_its_code_and_model_inputs",
    "distribution": "test_refused_with_the_field_named[job-distributed]",
}


def test_every_row_of_the_table_has_a_case() -> None:
    covered = {
        (case.kind, path)
        for case in CASES.values()
        for path in _leaf_paths(azure_doc(case.kind, case.fields))
    }
    missing = [
        f"{row.azure} ({sorted(k.value for k in row.kinds)})"
        for row in ROWS
        if not any((kind, row.azure) in covered for kind in row.kinds)
        and row.azure not in ROWS_TESTED_ELSEWHERE
    ]
    assert missing == []


def test_every_row_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "azureml.md").read_text()
    missing = sorted({row.azure for row in ROWS if f"`{row.azure}`" not in doc})
    assert missing == []


REFUSALS: dict[str, tuple[AzureKind, dict[str, Any], str]] = {
    # name: (kind, fields, what the message says)
    "auth-mode-unknown": (MOE, {"auth_mode": "password"}, "auth_mode: 'password' is not an Azure auth mode"),
    "count-not-an-integer": (MOD, {"instance_count": "two"}, "instance_count: 'two' is not an integer"),
    "count-a-boolean": (MOD, {"instance_count": True}, "instance_count: True is not an integer"),
    "traffic-not-a-number": (MOE, {"traffic": {"blue": "all"}}, "traffic.blue: 'all' is not an integer"),
    "scale-type": (KOD, {"scale_settings": {"type": "manual"}}, "scale_settings.type: 'manual'"),
    "pipeline-batch": (BD, {"type": "pipeline"}, "type: 'pipeline': only model batch deployments"),
    "output-action": (
        BD,
        {"settings": {"output_action": "append"}},
        "settings.output_action: 'append' is not one of",
    ),
    "datastore-model": (
        MOD,
        {"model": {"path": "azureml://datastores/ws/paths/m"}},
        "model.path: 'azureml://datastores",
    ),
    "missing-local-model": (MOD, {"model": {"path": "./nowhere"}}, "model.path: './nowhere'"),
    "bad-model-reference": (
        MOD,
        {"model": "diabetes:3"},
        "model: 'diabetes:3' is not an Azure model reference",
    ),
    "triton-model": (
        MOD,
        {"model": {"path": "s3://b/m", "type": "triton_model"}},
        "model.type: 'triton_model'",
    ),
    "quantity": (
        KOD,
        {"resources": {"requests": {"cpu": [1]}}},
        "resources.requests.cpu: [1] is not a quantity",
    ),
    "env-not-scalar": (
        MOD,
        {"environment_variables": {"A": {"b": 1}}},
        "environment_variables.A: not a scalar",
    ),
    "upper-case-name": (MOE, {"name": "MyEndpoint"}, "name: 'MyEndpoint' must be a DNS label"),
    "utilization-without-cpu": (
        KOD,
        {"scale_settings": {"type": "target_utilization"}},
        "spec.resources.requests.cpu: required by scaleSettings.type targetUtilization",
    ),
    "mirror-above-50": (MOE, {"mirror_traffic": {"green": 60}}, "spec.mirrorTraffic.green"),
    "traffic-sum": (MOE, {"traffic": {"blue": 50}}, "spec.traffic: percentages sum to 50"),
    "job-distributed": (
        CJ,
        {"distribution": {"type": "pytorch"}},
        "distribution: distributed training ({'type': 'pytorch'}) is not supported",
    ),
    "job-instances": (CJ, {"resources": {"instance_count": 2}}, "resources.instance_count: 2: distributed"),
    "job-data-asset": (
        CJ,
        {"inputs": {"data": {"type": "uri_folder", "path": "azureml:diabetes-data:1"}}},
        "inputs.data.path: 'azureml:diabetes-data:1' is not in storage a pod can read",
    ),
    "job-mltable": (
        CJ,
        {"inputs": {"t": {"type": "mltable", "path": "s3://b/t"}}},
        "inputs.t.type: 'mltable' inputs are not supported",
    ),
    "job-unknown-input": (
        CJ,
        {"command": "run ${{inputs.nope}}"},
        "command: ${{inputs.nope}} names no input",
    ),
    "job-unknown-output": (
        CJ,
        {"command": "run ${{outputs.nope}}"},
        "command: ${{outputs.nope}} names no output",
    ),
    "job-no-command": (CJ, {"command": None}, "command: None is not a non-empty string"),
    "collection-enabled": (
        MOD,
        {"data_collector": {"collections": {"request": {"enabled": "yes"}}}},
        "data_collector.collections.request.enabled: 'yes' is not true or false",
    ),
    "collection-rolling": (
        MOD,
        {"data_collector": {"collections": {"request": {"enabled": True}}, "rolling_rate": "month"}},
        "data_collector.rolling_rate: 'month' is not minute, hour or day",
    ),
    "collection-sampling": (
        MOD,
        {"data_collector": {"collections": {"request": {"enabled": True}}, "sampling_rate": 2}},
        "spec.dataCollector.samplingRate",
    ),
}


def test_a_data_collector_needs_a_destination(tmp_path: Path) -> None:
    doc = azure_doc(MOD, {"data_collector": {"collections": {"model_inputs": {"enabled": "True"}}}})
    with pytest.raises(ImportRefused) as refused:
        import_document(tmp_path / "azure.yml", doc)
    assert "data_collector: mlendpoints needs a destination" in refused.value.message
    assert "--collect-to" in refused.value.hint


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_with_the_field_named(tmp_path: Path, name: str) -> None:
    kind, fields, text = REFUSALS[name]
    with pytest.raises(ImportRefused) as refused:
        run_import(tmp_path, kind, fields)
    assert text in refused.value.message
    assert refused.value.message.startswith(str(tmp_path / "azure.yml"))
    assert refused.value.hint


@pytest.mark.parametrize("mode", ["aml_token", "aad_token"])
def test_token_auth_becomes_kubernetes_token_auth_with_a_warning(tmp_path: Path, mode: str) -> None:
    imported = run_import(tmp_path, MOE, {"auth_mode": mode})
    assert imported.resource["spec"]["authMode"] == "token"
    (finding,) = imported.findings
    assert finding.field == "auth_mode"
    assert "onlineendpoints/score" in finding.line() and "Kubernetes bearer token" in finding.line()
    assert resource_errors(imported.resource) == []


def test_the_corpus_command_job_becomes_a_job_with_its_code_and_model_inputs(tmp_path: Path) -> None:
    configmap, job = import_file(copy_corpus(tmp_path) / "jobs" / "command-job.yml", OPTIONS)[0].objects
    assert configmap["metadata"]["name"] == "evaluate-diabetes-code"
    assert "mlflow.pyfunc.load_model(args.model)" in configmap["data"]["evaluate.py"]
    assert job["metadata"]["name"] == "evaluate-diabetes"
    pod = job["spec"]["template"]
    assert json.loads(pod["metadata"]["annotations"]["mlendpoints.io/models"]) == {
        "model": "models:/sklearn-diabetes/1",
        "data": "https://example.org/data/diabetes.csv",
    }
    [main] = pod["spec"]["containers"]
    assert main["command"][2] == (
        "python evaluate.py --model $(MLENDPOINTS_INPUT_MODEL) --data $(MLENDPOINTS_INPUT_DATA)/diabetes.csv "
        "--alpha 0.5 --out /var/mlendpoints/outputs/scores"
    )
    assert main["image"] == JOB_IMAGE and main["workingDir"] == "/var/mlendpoints/code"
    assert {"name": "code", "configMap": {"name": "evaluate-diabetes-code"}} in pod["spec"]["volumes"]
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 3600


def test_cli_runs_a_command_job_on_the_serving_image_unless_told(tmp_path: Path) -> None:
    job = str(copy_corpus(tmp_path) / "jobs" / "command-job.yml")
    for extra, image in (([], PUBLIC_SERVING_IMAGE), (["--job-image", JOB_IMAGE], JOB_IMAGE)):
        result = CliRunner().invoke(cli, ["import", "azureml", job, *extra])
        assert result.exit_code == 0, result.output
        _, out = yaml.safe_load_all(result.stdout)
        assert out["spec"]["template"]["spec"]["containers"][0]["image"] == image
        env = "'azureml://registries/azureml/environments/sklearn-1.5/labels/latest'"
        assert f"environment: {env} is not an image" in " ".join(result.stderr.split())


def test_a_command_job_without_a_name_is_named_after_its_file(tmp_path: Path) -> None:
    doc = {k: v for k, v in azure_doc(CJ, {}).items() if k != "name"}
    imported = import_document(tmp_path / "Nightly_Eval.yml", doc, OPTIONS)
    assert imported.resource["metadata"]["name"] == "nightly-eval"
    assert [f.field for f in imported.findings] == ["name"]


@pytest.mark.parametrize(
    ("doc", "kind"),
    [
        ({"name": "e", "auth_mode": "key"}, MOE),
        ({"name": "e", "auth_mode": "key", "compute": "azureml:k8s"}, KOE),
        ({"name": "e", "traffic": {"b": 100}}, MOE),
        ({"name": "b", "endpoint_name": "e", "model": "azureml:m:1", "instance_type": "x"}, MOD),
        ({"name": "b", "endpoint_name": "e", "model": "azureml:m:1", "type": "kubernetes"}, KOD),
        ({"name": "b", "endpoint_name": "e", "model": "azureml:m:1", "settings": {}}, BD),
        ({"name": "b", "endpoint_name": "e", "model": "azureml:m:1", "mini_batch_size": 2}, BD),
        ({"name": "e", "defaults": {"deployment_name": "b"}}, BE),
    ],
)
def test_kind_without_schema_from_the_fields(tmp_path: Path, doc: dict[str, Any], kind: AzureKind) -> None:
    assert is_azure_document(doc)
    assert import_document(tmp_path / "a.yml", doc).azure_kind is kind


def test_unknown_kind_and_no_clue_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportRefused, match=r"\$schema: .*pipelineJob.* is not a kind"):
        import_document(tmp_path / "a.yml", {"$schema": SCHEMA.format("pipelineJob"), "name": "p"})
    with pytest.raises(ImportRefused, match=r"\$schema: missing"):
        import_document(tmp_path / "a.yml", {"name": "p", "description_text": "x"})


def test_kubernetes_documents_are_not_azure() -> None:
    assert not is_azure_document({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    assert not is_azure_document({"name": "env", "channels": ["conda-forge"], "dependencies": []})


def test_code_configuration_becomes_a_configmap(tmp_path: Path) -> None:
    code = tmp_path / "src"
    (code / "helpers").mkdir(parents=True)
    (code / "score.py").write_text("def init():\n    pass\n")
    (code / "util.py").write_text("X = 1\n")
    (code / "weights.bin").write_bytes(b"\xff\x00\xfe")
    (code / "helpers" / "h.py").write_text("")
    (code / "__pycache__").mkdir()
    fields = {"code_configuration": {"code": "src", "scoring_script": "./score.py"}}
    imported = run_import(tmp_path, MOD, fields)
    config_map, resource = imported.objects
    assert config_map["kind"] == "ConfigMap" and config_map["metadata"]["name"] == "blue-code"
    assert config_map["data"] == {"score.py": "def init():\n    pass\n", "util.py": "X = 1\n"}
    assert base64.b64decode(config_map["binaryData"]["weights.bin"]) == b"\xff\x00\xfe"
    assert resource["spec"]["codeConfiguration"] == {"configMap": "blue-code", "scoringScript": "score.py"}
    assert [f.field for f in imported.findings] == ["code_configuration.code/helpers"]


@pytest.mark.parametrize(
    ("code", "script", "text"),
    [
        ("src", "sub/score.py", "code_configuration.scoring_script: 'sub/score.py' is in a subfolder"),
        ("src", "missing.py", "code_configuration.scoring_script: 'missing.py' is not in"),
        ("nowhere", "score.py", "code_configuration.code:"),
        ("azureml:code:1", "score.py", "is an Azure code asset"),
    ],
)
def test_code_configuration_refusals(tmp_path: Path, code: str, script: str, text: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("")
    with pytest.raises(ImportRefused) as refused:
        run_import(tmp_path, MOD, {"code_configuration": {"code": code, "scoring_script": script}})
    assert text in refused.value.message


@pytest.mark.parametrize("kind", [MOD, BD])
@pytest.mark.parametrize("model_first", [True, False])
@pytest.mark.parametrize(
    ("path", "folder"),
    [
        ("models/model", "model"),  # a local folder
        ("models/model/", "model"),
        ("s3://bucket/registered/model-1/", "model-1"),  # a remote folder: Azure's path ends in /
        ("s3://bucket/registered/model.pkl", None),  # maybe a file: its files are at the root
        ("models/-model", None),  # a name the layout cannot take: warned, files at the root
    ],
)
def test_a_scoring_script_finds_a_folder_model_where_azure_puts_it(
    tmp_path: Path, kind: AzureKind, model_first: bool, path: str, folder: str | None
) -> None:
    """Azure gives a script a model registered from folder F at AZUREML_MODEL_DIR/F: codeConfiguration
    says F (modelFolder), whichever of the two fields the file writes first."""
    (tmp_path / "models" / "model").mkdir(parents=True)
    (tmp_path / "models" / "-model").mkdir(parents=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def init():\n    pass\n")
    model = {"model": {"path": path}}
    code = {"code_configuration": {"code": "src", "scoring_script": "score.py"}}
    imported = run_import(tmp_path, kind, {**model, **code} if model_first else {**code, **model})
    expected = {"configMap": f"{imported.resource['metadata']['name']}-code", "scoringScript": "score.py"}
    if folder is not None:
        expected["modelFolder"] = folder
    assert imported.resource["spec"]["codeConfiguration"] == expected
    assert ("-model" in path) == any(
        "not one mlendpoints can lay out" in f.message for f in imported.findings
    )


def test_a_folder_model_without_a_script_has_no_layout(tmp_path: Path) -> None:
    (tmp_path / "models" / "model").mkdir(parents=True)
    imported = run_import(tmp_path, MOD, {"model": {"path": "models/model"}})
    assert "codeConfiguration" not in imported.resource["spec"]


def test_local_model_path_is_resolved_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    imported = run_import(tmp_path, MOD, {"model": {"path": "models/m", "name": "m", "version": 1}})
    assert imported.resource["spec"]["model"] == str(tmp_path / "models" / "m")
    assert sorted(f.field for f in imported.findings) == ["model.name", "model.path", "model.version"]


# --- the corpus, written as Azure's public examples write them ---------------------------------

EXPECTED_KINDS = {
    "online/mlflow/endpoint.yml": "OnlineEndpoint",
    "online/mlflow/sklearn-deployment.yml": "OnlineDeployment",
    "online/mlflow/registry-deployment.yml": "OnlineDeployment",
    "online/custom-script/endpoint.yml": "OnlineEndpoint",
    "online/custom-script/blue-deployment.yml": "OnlineDeployment",
    "online/kubernetes/endpoint.yml": "OnlineEndpoint",
    "online/kubernetes/blue-deployment.yml": "OnlineDeployment",
    "online/kubernetes/green-deployment.yml": "OnlineDeployment",
    "batch/mlflow/endpoint.yml": "BatchEndpoint",
    "batch/mlflow/deployment.yml": "BatchDeployment",
    "batch/custom-script/endpoint.yml": "BatchEndpoint",
    "batch/custom-script/deployment.yml": "BatchDeployment",
    "jobs/command-job.yml": "Job",
}


def test_the_corpus_is_listed_whole() -> None:
    assert sorted(map(str, corpus_files())) == sorted(EXPECTED_KINDS)


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_corpus_file_imports_to_valid_resources(tmp_path: Path, name: str) -> None:
    root = copy_corpus(tmp_path)
    [imported] = import_file(root / name, OPTIONS)
    assert imported.resource["kind"] == EXPECTED_KINDS[name]
    for obj in imported.objects:
        if obj["kind"] == "ConfigMap":
            assert obj["data"]
        else:
            assert resource_errors(obj) == []


def test_corpus_kubernetes_deployment_exactly(tmp_path: Path) -> None:
    [imported] = import_file(copy_corpus(tmp_path) / "online/kubernetes/blue-deployment.yml")
    assert imported.resource["spec"] == {
        "endpointName": "k8s-endpoint",
        "model": "models:/sklearn-diabetes/latest",
        "scaleSettings": {
            "type": "targetUtilization",
            "minInstances": 1,
            "maxInstances": 5,
            "pollingInterval": 10,
            "targetUtilizationPercentage": 60,
        },
        "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        "requestSettings": {"requestTimeoutMs": 10000, "maxConcurrentRequestsPerInstance": 2},
    }
    assert [f.field for f in imported.findings] == ["instance_type"]
    assert "node.kubernetes.io/instance-type: defaultinstancetype" in imported.findings[0].message


def test_corpus_batch_deployment_exactly(tmp_path: Path) -> None:
    [imported] = import_file(copy_corpus(tmp_path) / "batch/mlflow/deployment.yml")
    assert imported.resource["spec"] == {
        "endpointName": "heart-classifier-batch",
        "model": "models:/heart-classifier-mlflow/latest",
        "resources": {"instanceCount": 2},
        "settings": {
            "maxConcurrencyPerInstance": 2,
            "miniBatchSize": 2,
            "outputAction": "appendRow",
            "outputFileName": "predictions.csv",
            "retrySettings": {"maxRetries": 3, "timeout": 300},
            "errorThreshold": -1,
            "loggingLevel": "info",
            "outputHeader": False,  # Azure's predictions.csv has no header line
        },
    }


# --- the command line and local up ------------------------------------------------------------


def test_cli_writes_yaml_and_lists_findings_on_stderr(tmp_path: Path) -> None:
    root = copy_corpus(tmp_path)
    files = [str(root / "online/mlflow/endpoint.yml"), str(root / "online/mlflow/registry-deployment.yml")]
    refused = CliRunner().invoke(cli, ["import", "azureml", *files])
    assert isinstance(refused.exception, ImportRefused)  # the entry point prints it, with its hint
    assert "data_collector: mlendpoints needs a destination" in refused.exception.message
    result = CliRunner().invoke(cli, ["import", "azureml", *files, "--collect-to", "gs://team/collected"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["OnlineEndpoint", "OnlineDeployment"]
    assert docs[1]["spec"]["dataCollector"]["destination"] == "gs://team/collected"
    assert (
        "warning:" in result.stderr and "data_collector: records go to gs://team/collected/" in result.stderr
    )
    assert "warning:" not in result.stdout


def test_cli_output_dir_one_file_per_azure_file(tmp_path: Path) -> None:
    root = copy_corpus(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["import", "azureml", str(root / "online/custom-script/blue-deployment.yml"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all((out / "blue-deployment.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "OnlineDeployment"]
    assert "def run(raw_data):" in docs[0]["data"]["score.py"]
    assert "score.py: |" in (out / "blue-deployment.yaml").read_text()  # the script stays readable


def test_yaml_round_trips(tmp_path: Path) -> None:
    root = copy_corpus(tmp_path)
    imported = [item for name in EXPECTED_KINDS for item in import_file(root / name, OPTIONS)]
    assert list(yaml.safe_load_all(to_yaml(imported))) == [o for i in imported for o in i.objects]
    assert json.loads(json.dumps(imported[0].resource)) == imported[0].resource


def test_local_up_reads_azure_files_as_they_are(tmp_path: Path) -> None:
    root = copy_corpus(tmp_path)
    loaded = manifests.load(
        [
            root / "online/mlflow/endpoint.yml",
            root / "online/mlflow/sklearn-deployment.yml",
            root / "online/custom-script/blue-deployment.yml",
        ]
    )
    endpoint = manifests.select_endpoint(loaded)
    assert endpoint.name == "my-endpoint"
    assert sorted(endpoint.deployments) == ["blue", "sklearn-deployment"]
    assert [o["metadata"]["name"] for o in endpoint.objects] == ["blue-code"]
    assert any(f.field == "instance_type" for m in loaded for f in m.findings)
