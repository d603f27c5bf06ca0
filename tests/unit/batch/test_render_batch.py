"""BatchJob -> Jobs: one Indexed Job that scores, one Job that merges."""

from __future__ import annotations

from typing import Any

from pydantic_settings import CliApp

from mlendpoints.api.batch import BatchDeployment, BatchJob
from mlendpoints.render.batch import (
    JobSettings,
    output_file_uri,
    render_merge_job,
    render_progress,
    render_score_jobs,
)
from mlendpoints.render.common import RenderSettings
from mlendpoints.render.deployment import ResolvedModel
from mlendpoints_serving.batch.settings import BatchSettings

SETTINGS = RenderSettings(
    serving_image="serving:dev", serving_image_gpu="serving:gpu", mlflow_tracking_uri="http://mlflow:5000"
)
MODEL = ResolvedModel("models:/diabetes/1", "1")


def _deployment(**spec: Any) -> BatchDeployment:
    return BatchDeployment.model_validate(
        {
            "apiVersion": "mlendpoints.io/v1alpha1",
            "kind": "BatchDeployment",
            "metadata": {"name": "ridge", "namespace": "ml", "uid": "uid-dep"},
            "spec": {
                "endpointName": "scoring",
                "model": "models:/diabetes@champion",
                "resources": {"instanceCount": 2, "limits": {"memory": "1Gi"}},
                "settings": {
                    "miniBatchSize": 5,
                    "maxConcurrencyPerInstance": 2,
                    "retrySettings": {"maxRetries": 4, "timeout": 60},
                },
                "env": [
                    {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}}
                ],
                **spec,
            },
        }
    )


def _job(**spec: Any) -> BatchJob:
    return BatchJob.model_validate(
        {
            "apiVersion": "mlendpoints.io/v1alpha1",
            "kind": "BatchJob",
            "metadata": {"name": "nightly", "namespace": "ml", "uid": "uid-job"},
            "spec": {
                "endpointName": "scoring",
                "input": {"uri": "pvc://data/in"},
                "output": {"uri": "pvc://results/run-1"},
                **spec,
            },
        }
    )


def _driver(job: dict[str, Any]) -> dict[str, Any]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return container


def _flags(job: dict[str, Any]) -> BatchSettings:
    """The rendered arguments, parsed by the driver's own flag parser."""
    return CliApp.run(BatchSettings, cli_args=_driver(job)["args"])


def test_one_indexed_job_of_one_completion_per_instance():
    [job] = render_score_jobs(_job(), _deployment(), MODEL, SETTINGS)
    spec = job["spec"]
    assert job["metadata"]["name"] == "nightly-score"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["backoffLimit"] == 8, "an Indexed Job counts failed pods over all indexes"
    flags = _flags(job)
    assert flags.instance_index is None, "the driver reads $JOB_COMPLETION_INDEX"
    assert (flags.instance_count, flags.phase) == (2, "score")


def test_pod_fetches_the_model_and_mounts_claims():
    [job] = render_score_jobs(_job(), _deployment(), MODEL, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [fetch] = pod["initContainers"]
    assert fetch["args"] == ["--model-uri", "models:/diabetes/1", "--dest", "/var/mlendpoints/model"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in fetch["env"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"data": True, "results": False}
    flags = _flags(job)
    assert (flags.input, flags.output) == ("/mnt/mlendpoints/data/in", "/mnt/mlendpoints/results/run-1")
    mounts = {m["mountPath"] for m in _driver(job)["volumeMounts"]}
    assert {"/mnt/mlendpoints/data", "/mnt/mlendpoints/results"} <= mounts
    env = _driver(job)["env"]
    assert {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}} in env
    assert _driver(job)["resources"]["limits"] == {"memory": "1Gi"}


def test_job_overrides_win_over_the_deployment_settings():
    job = _job(
        overrides={
            "instanceCount": 3,
            "miniBatchSize": 7,
            "errorThreshold": 0,
            "retrySettings": {"timeout": 5},
            "outputAction": "summaryOnly",
        },
        input={"uri": "s3://bucket/in", "type": "uriFolder"},
        output={"uri": "s3://bucket/out"},
    )
    dep = _deployment(
        codeConfiguration={"configMap": "code", "scoringScript": "score.py", "modelFolder": "model"}
    )
    s = JobSettings.of(job.spec, dep.spec)
    assert (s.instance_count, s.mini_batch_size, s.error_threshold, s.timeout, s.max_retries) == (
        3,
        7,
        0,
        5,
        4,
    )
    [scoring] = render_score_jobs(job, dep, MODEL, SETTINGS)
    assert scoring["spec"]["completions"] == 3
    flags = _flags(scoring)
    assert (flags.input, flags.output, flags.mini_batch_size, flags.max_concurrency) == (
        "s3://bucket/in",
        "s3://bucket/out",
        7,
        2,
    )
    assert (flags.output_action, flags.retry_timeout, flags.error_threshold) == ("summaryOnly", 5.0, 0)
    assert flags.scoring_script == "/var/mlendpoints/code/score.py"
    # Azure's layout (modelFolder): the model in a folder of the mount, the mount as AZUREML_MODEL_DIR.
    assert (flags.model_dir, flags.azureml_model_dir) == (
        "/var/mlendpoints/model/model",
        "/var/mlendpoints/model",
    )
    fetch = scoring["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["args"][-2:] == ["--dest", "/var/mlendpoints/model/model"]
    pod = scoring["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert {"name": "code", "configMap": {"name": "code"}} in pod["volumes"]


def test_the_merge_job_reads_no_model():
    merge = render_merge_job(_job(), _deployment(), SETTINGS)
    assert merge["metadata"]["name"] == "nightly-merge"
    assert "initContainers" not in merge["spec"]["template"]["spec"]
    assert merge["metadata"]["labels"]["mlendpoints.io/batch-phase"] == "merge"
    assert (_flags(merge).phase, _flags(merge).instance_count) == ("merge", 2)


def test_output_format_and_partitioning_reach_both_phases_and_name_the_output():
    dep = _deployment(settings={"outputFormat": "parquet", "partitionOutputs": True})
    job = _job(output={"uri": "s3://bucket/out/"})
    s = JobSettings.of(job.spec, dep.spec)
    assert output_file_uri(job.spec, s) == "s3://bucket/out/predictions"
    for rendered in (render_score_jobs(job, dep, MODEL, SETTINGS)[0], render_merge_job(job, dep, SETTINGS)):
        flags = _flags(rendered)
        assert (flags.output_format, flags.partition_outputs, flags.rows_name) == (
            "parquet", True, "predictions",
        )  # fmt: skip
    # the job's overrides win; a csv job's flags are those of before
    overridden = _job(overrides={"outputFormat": "jsonl", "partitionOutputs": False})
    s = JobSettings.of(overridden.spec, dep.spec)
    assert output_file_uri(overridden.spec, s) == "pvc://results/run-1/predictions.jsonl"
    plain = _driver(render_score_jobs(_job(), _deployment(), MODEL, SETTINGS)[0])["args"]
    assert "--output-format" not in plain and "--partition-outputs" not in plain
    assert "--no-output-header" not in plain


def test_azures_header_less_csv_reaches_the_driver_and_a_job_may_turn_it_back():
    dep = _deployment(settings={"outputHeader": False})
    for rendered in (
        render_score_jobs(_job(), dep, MODEL, SETTINGS)[0],
        render_merge_job(_job(), dep, SETTINGS),
    ):
        assert _flags(rendered).output_header is False
    again = _job(overrides={"outputHeader": True})
    assert _flags(render_merge_job(again, dep, SETTINGS)).output_header is True


def test_scoring_pods_report_progress_with_a_token_for_the_driver_only():
    job, dep = _job(), _deployment()
    [scoring] = render_score_jobs(job, dep, MODEL, SETTINGS)
    pod = scoring["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "nightly-batch" and pod["automountServiceAccountToken"] is False
    assert _flags(scoring).progress_configmap == "nightly-progress"
    token_mounts = [m for m in _driver(scoring)["volumeMounts"] if m["name"] == "progress-token"]
    assert token_mounts == [
        {
            "name": "progress-token",
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        }
    ]
    [fetch] = pod["initContainers"]
    assert "progress-token" not in {m["name"] for m in fetch["volumeMounts"]}, "the model fetch gets no token"
    merge = render_merge_job(job, dep, SETTINGS)["spec"]["template"]["spec"]
    assert "serviceAccountName" not in merge and merge["automountServiceAccountToken"] is False
    assert _flags(render_merge_job(job, dep, SETTINGS)).progress_configmap is None

    configmap, account, role, binding = render_progress(job, dep)
    assert (configmap["kind"], configmap["metadata"]["name"], configmap["data"]) == (
        "ConfigMap", "nightly-progress", {},
    )  # fmt: skip
    assert configmap["metadata"]["labels"]["mlendpoints.io/component"] == "batch"
    assert account["automountServiceAccountToken"] is False
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["nightly-progress"],
            "verbs": ["get", "patch"],
        }
    ], "exactly the one ConfigMap, get and patch"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nightly-batch", "namespace": "ml"}]
    for obj in (configmap, account, role, binding):
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-job"
