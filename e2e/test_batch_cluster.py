"""End to end on the local cluster: a BatchJob run by the operator (from its image) to Succeeded.

The iris classifier is registered in the real MLflow server the pods fetch from; the input
files and the output folder live on a hostPath PersistentVolume (the local cluster is one
node, this machine), mounted by the pods through its claim (`pvc://data/...`) and read here.
- `mlendpoints batch invoke` runs a job of 2 instances to Succeeded: its status counts are
  right, and predictions.csv holds every input row exactly once, byte for byte what
  `mlendpoints batch run` writes on this machine;
- a BatchJob naming a missing endpoint or deployment gets a condition saying so, and no Job;
- deleting a BatchJob stops its pods.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from e2e.operator_deploy import Kubectl, wait_for
from mlendpoints.render.batch import LABEL_BATCH_JOB

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

API = "mlendpoints.io/v1alpha1"
CLI = str(Path(sys.executable).parent / "mlendpoints")
MODEL_NAME = "iris-batch-e2e"
CLAIM = "data"
# Input files -> iris rows [start, end); plus one file the model cannot take (a failed item).
FILES = {"a.csv": (0, 30), "b.csv": (30, 60), "c.csv": (60, 90), "nested/d.csv": (90, 120),
         "nested/e.csv": (120, 150)}  # fmt: skip
BAD_FILE = "notes.txt"
MINI_BATCH_SIZE = 2  # 6 files: 3 mini-batches, 2 for instance 0 and 1 for instance 1
JOB_TIMEOUT = 300


@pytest.fixture(scope="module")
def iris_uri(mlflow_server: Any, iris_model: Path) -> str:
    """The iris classifier registered in the MLflow server (version 1), as the pods fetch it."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.url)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(iris_model), artifact_path="model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL_NAME).version
    return f"models:/{MODEL_NAME}/{version}"


def iris_frame() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).data
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    return frame.sample(frac=1.0, random_state=2).reset_index(drop=True)


@pytest.fixture
def data(
    kubectl: Kubectl, namespace: str, host_share: Callable[[Path], Path], tmp_path: Path
) -> Iterator[Path]:
    """The claim `data` in the test's namespace: a hostPath volume holding input/ (read by the pods,
    uid 1000) and room for outputs (writable by uid 1000). Yields its folder on this machine."""
    source = tmp_path / "data"
    frame = iris_frame()
    for name, (start, end) in FILES.items():
        (source / "input" / name).parent.mkdir(parents=True, exist_ok=True)
        frame.iloc[start:end].to_csv(source / "input" / name, index=False)
    (source / "input" / BAD_FILE).write_text("not a table\n")
    shared = host_share(source)
    shared.chmod(0o777)  # outputs are written by the pods' uid 1000
    volume = f"{namespace}-{CLAIM}"
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "hostPath": {"path": str(shared), "type": "Directory"},
                    "claimRef": {"namespace": namespace, "name": CLAIM},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": CLAIM, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "volumeName": volume,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        ]
    )
    wait_for(
        "the claim bound",
        lambda: (kubectl.get("pvc", CLAIM, namespace) or {}).get("status", {}).get("phase") == "Bound",
        60,
    )
    yield shared
    kubectl.try_run("delete", "pv", volume, "--wait=false")


def endpoint_and_deployment(model: str, **deployment_spec: Any) -> list[Mapping[str, Any]]:
    return [
        {
            "apiVersion": API,
            "kind": "BatchEndpoint",
            "metadata": {"name": "iris"},
            "spec": {"defaultDeployment": "logreg"},
        },
        {
            "apiVersion": API,
            "kind": "BatchDeployment",
            "metadata": {"name": "logreg"},
            "spec": {
                "endpointName": "iris",
                "model": model,
                "resources": {"instanceCount": 2, "requests": {"cpu": "100m", "memory": "256Mi"}},
                "settings": {"miniBatchSize": MINI_BATCH_SIZE, "maxConcurrencyPerInstance": 1},
                **deployment_spec,
            },
        },
    ]


def batch_job(name: str, endpoint: str, output: str, **spec: Any) -> Mapping[str, Any]:
    return {
        "apiVersion": API,
        "kind": "BatchJob",
        "metadata": {"name": name},
        "spec": {
            "endpointName": endpoint,
            "input": {"uri": f"pvc://{CLAIM}/input"},
            "output": {"uri": f"pvc://{CLAIM}/{output}"},
            **spec,
        },
    }


def cli(kube_cluster: Any, namespace: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig)}
    return subprocess.run(
        [CLI, *args, "-n", namespace], env=env, capture_output=True, text=True, timeout=timeout
    )


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def children(kubectl: Kubectl, namespace: str, kind: str, job: str) -> list[dict[str, Any]]:
    found = kubectl.json("-n", namespace, "get", kind, "-l", f"{LABEL_BATCH_JOB}={job}")
    return list(found["items"])


def debug_dump(kubectl: Kubectl, namespace: str) -> None:
    print(kubectl.try_run("-n", namespace, "get", "bj,jobs,pods", "-o", "wide").stdout)
    print(
        kubectl.try_run(
            "-n", namespace, "logs", "-l", LABEL_BATCH_JOB, "--all-containers", "--tail=30"
        ).stdout
    )
    operator_logs = kubectl.try_run(
        "-n", "mlendpoints-system", "logs", "deploy/mlendpoints-operator", "--tail=40"
    )
    print(operator_logs.stdout)


def test_batch_job_with_two_instances_scores_every_row_exactly_once(
    kube_cluster: Any, kubectl: Kubectl, namespace: str, data: Path, iris_uri: str, iris_model: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    kubectl.apply(endpoint_and_deployment(iris_uri), namespace)
    started = time.monotonic()
    done = cli(
        kube_cluster, namespace, "batch", "invoke", "iris", "--name", "run-1",
        "--input", f"pvc://{CLAIM}/input", "--output", f"pvc://{CLAIM}/out/run-1", timeout=JOB_TIMEOUT,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if done.returncode != 0:
        debug_dump(kubectl, namespace)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"BatchJob of 2 instances (fetch, score, merge) Succeeded in {seconds:.1f}s")
    assert "Succeeded" in done.stdout

    job = kubectl.get("batchjob", "run-1", namespace) or {}
    status = job["status"]
    assert status["phase"] == "Succeeded"
    assert status["miniBatches"] == {"total": 3, "succeeded": 3, "failed": 0}
    assert status["items"] == {"total": 6, "succeeded": 5, "failed": 1}
    assert status["outputUri"] == f"pvc://{CLAIM}/out/run-1/predictions.csv"
    assert condition(job, "Complete")["status"] == "True"
    jobs = {j["metadata"]["name"]: j for j in children(kubectl, namespace, "jobs", "run-1")}
    assert set(jobs) == {"run-1-score", "run-1-merge"}
    # One Indexed Job: each instance is one completion index, and each index completed once.
    score = jobs["run-1-score"]
    assert (score["spec"]["completionMode"], score["spec"]["completions"]) == ("Indexed", 2)
    assert score["status"]["completedIndexes"] == "0,1" and score["status"]["succeeded"] == 2
    indexes = sorted(
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        for p in kubectl.json("-n", namespace, "get", "pods", "-l", "job-name=run-1-score")["items"]
        if p["status"]["phase"] == "Succeeded"
    )
    assert indexes == ["0", "1"]

    out = data / "out" / "run-1"
    predictions = pd.read_csv(out / "predictions.csv")
    # Every input row exactly once: files in sorted order, each file's rows in order.
    assert list(predictions["file_name"].drop_duplicates()) == sorted(FILES)
    for name, (start, end) in FILES.items():
        assert list(predictions.loc[predictions["file_name"] == name, "row"]) == list(range(end - start))
    assert len(predictions) == 150
    assert BAD_FILE in (out / "errors.jsonl").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 150 and summary["items"] == status["items"]

    # The same job on this machine, one instance: the same bytes.
    local = tmp_path / "local-out"
    ran = subprocess.run(
        [CLI, "batch", "run", "--model", str(iris_model), "--input", str(data / "input"),
         "--output", str(local), "--mini-batch-size", str(MINI_BATCH_SIZE)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert (out / "predictions.csv").read_bytes() == (local / "predictions.csv").read_bytes()


def test_a_job_naming_a_missing_endpoint_or_deployment_says_so_and_starts_nothing(
    kube_cluster: Any, kubectl: Kubectl, namespace: str, data: Path, iris_uri: str
) -> None:
    kubectl.apply(endpoint_and_deployment(iris_uri), namespace)
    kubectl.apply(
        [
            batch_job("orphan", "nope", "out/orphan"),
            batch_job("ghost", "iris", "out/ghost", deploymentName="ghost"),
        ],
        namespace,
    )
    expected = {
        "orphan": ("EndpointNotFound", "BatchEndpoint 'nope' does not exist"),
        "ghost": ("DeploymentNotFound", "BatchDeployment 'ghost' does not exist"),
    }
    for name, (reason, message) in expected.items():

        def started(name: str = name) -> dict[str, Any]:
            return condition(kubectl.get("batchjob", name, namespace), "Started")

        cond = wait_for(f"{name}'s Started condition", started, 60)
        assert (cond["status"], cond["reason"], cond["message"]) == ("False", reason, message)
        assert (kubectl.get("batchjob", name, namespace) or {})["status"]["phase"] == "Pending"
    time.sleep(2)  # a Job started by mistake would be there by now
    for name in expected:
        assert children(kubectl, namespace, "jobs", name) == []
    assert not (data / "out").exists()
    # The CLI refuses before creating anything.
    done = cli(kube_cluster, namespace, "batch", "invoke", "nope", "-i", "a", "-o", "b", timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: no BatchEndpoint 'nope' in namespace {namespace}")


SLOW_SCRIPT = """\
import time


def init():
    pass


def run(mini_batch):
    time.sleep(3600)
    return list(mini_batch)
"""


def test_deleting_a_batch_job_stops_its_pods(
    kubectl: Kubectl, namespace: str, data: Path, iris_uri: str
) -> None:
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "slow-script"},
                "data": {"slow.py": SLOW_SCRIPT},
            },
            *endpoint_and_deployment(
                iris_uri, codeConfiguration={"configMap": "slow-script", "scoringScript": "slow.py"}
            ),
            batch_job("slow", "iris", "out/slow", overrides={"retrySettings": {"timeout": 3600}}),
        ],
        namespace,
    )

    def scoring() -> bool:
        pods = children(kubectl, namespace, "pods", "slow")
        return len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods)

    try:
        wait_for("both instances scoring", scoring, 180, interval=1)
    except TimeoutError:
        debug_dump(kubectl, namespace)
        raise

    def gone() -> bool:
        return not children(kubectl, namespace, "pods", "slow") and not children(
            kubectl, namespace, "jobs", "slow"
        )

    kubectl.run("-n", namespace, "delete", "batchjob", "slow", "--wait=false")
    started = time.monotonic()
    wait_for(
        "the pods and Jobs gone",
        gone,
        120,
        interval=1,
    )
    print(f"pods of a deleted BatchJob gone in {time.monotonic() - started:.1f}s")


# Azure's "customize outputs in batch deployments" script: a parquet file per input file in
# $AZUREML_BI_OUTPUT_PATH; slow enough (SECONDS_PER_FILE) for the job's progress to be watched.
AZURE_OUTPUT_SCRIPT = """\
import os
import time
from pathlib import Path

import mlflow
import pandas as pd


def init():
    global model, output_path
    output_path = os.environ["AZUREML_BI_OUTPUT_PATH"]
    model = mlflow.pyfunc.load_model(os.environ["AZUREML_MODEL_DIR"])


def run(mini_batch):
    done = []
    for file_path in mini_batch:
        time.sleep(float(os.environ["SECONDS_PER_FILE"]))
        if not file_path.endswith(".csv"):
            continue  # not returned: a failed item
        data = pd.read_csv(file_path)
        data["prediction"] = model.predict(data)
        data.to_parquet(os.path.join(output_path, Path(file_path).stem + ".parquet"))
        done.append(file_path)
    return done
"""
SECONDS_PER_FILE = 3  # 6 files, one instance: about 18 s of scoring, reported every 5 s


def expected_predictions(iris_model: Path) -> dict[str, pd.DataFrame]:
    """Each input file's rows with the model's predictions, by file name."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(iris_model))
    frame = iris_frame()
    out = {}
    for name, (start, end) in FILES.items():
        rows = frame.iloc[start:end].reset_index(drop=True)
        out[name] = rows.assign(prediction=model.predict(rows))
    return out


def test_custom_outputs_land_once_and_progress_moves_while_the_job_runs(
    kube_cluster: Any, kubectl: Kubectl, namespace: str, data: Path, iris_uri: str, iris_model: Path
) -> None:
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "azure-outputs"},
                "data": {"batch_driver.py": AZURE_OUTPUT_SCRIPT},
            },
            *endpoint_and_deployment(
                iris_uri,
                codeConfiguration={"configMap": "azure-outputs", "scoringScript": "batch_driver.py"},
                env=[{"name": "SECONDS_PER_FILE", "value": str(SECONDS_PER_FILE)}],
            ),
        ],
        namespace,
    )
    env = {**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig)}
    invoke = subprocess.Popen(
        [CLI, "batch", "invoke", "iris", "--name", "custom", "-n", namespace, "--stream",
         "-i", f"pvc://{CLAIM}/input", "-o", f"pvc://{CLAIM}/out/custom", "--mini-batch-size", "1",
         "--set", "instanceCount=1", "--output-format", "jsonl"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: list[tuple[str, int, int]] = []  # (phase, mini-batches done, total) as the operator recorded
    columns = ""
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            status = (kubectl.get("batchjob", "custom", namespace) or {}).get("status") or {}
            mini = status.get("miniBatches") or {}
            seen.append((status.get("phase") or "", mini.get("succeeded", 0) + mini.get("failed", 0),
                         mini.get("total", 0)))  # fmt: skip
            if 0 < seen[-1][1] < seen[-1][2] and not columns:
                columns = kubectl.run("-n", namespace, "get", "bj", "custom")
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)
        output, _ = invoke.communicate(timeout=60)
    finally:
        if invoke.poll() is None:
            invoke.kill()
    if invoke.returncode != 0 or status.get("phase") != "Succeeded":
        debug_dump(kubectl, namespace)
    assert invoke.returncode == 0, output
    partial = [s for s in seen if s[0] == "Running" and 0 < s[1] < s[2]]
    print(f"progress seen while running: {sorted(set(partial))}")
    assert partial, f"a partial count before completion (seen: {sorted(set(seen))})"
    assert len({s[1] for s in partial}) >= 2, "the count moved more than once while it ran"
    header, row = columns.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "ENDPOINT", "PHASE", "PROGRESS"]
    assert "/6 (" in row, row
    assert "6/6 mini-batches" in output and "Succeeded" in output, output
    assert status["progress"] == "6/6 (100%)" and status["items"] == {"total": 6, "succeeded": 5, "failed": 1}

    # The script's parquet files, once each, beside the job's own files; the rows file is JSON lines.
    out = data / "out" / "custom"
    expected = expected_predictions(iris_model)
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(f"{Path(n).stem}.parquet" for n in FILES)
    for name, frame in expected.items():
        got = pd.read_parquet(out / f"{Path(name).stem}.parquet")
        pd.testing.assert_frame_equal(got, frame, check_dtype=False)
    assert status["outputUri"] == f"pvc://{CLAIM}/out/custom/predictions.jsonl"
    assert len(pd.read_json(out / "predictions.jsonl", lines=True)) == 5
    assert not [p for p in (out / "_parts").iterdir() if p.is_dir()], "no attempt folder is left"

    # Progress went through the job's ConfigMap, which only the job's identity may patch.
    progress = kubectl.get("configmap", "custom-progress", namespace) or {}
    assert json.loads(progress["data"]["instance-0"])["phase"] == "Succeeded"
    role = kubectl.get("role", "custom-batch", namespace) or {}
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": ["custom-progress"], "verbs": ["get", "patch"]}]  # fmt: skip
    can = kubectl.try_run(
        "auth", "can-i", "patch", "configmaps/azure-outputs", "-n", namespace,
        f"--as=system:serviceaccount:{namespace}:custom-batch",
    )  # fmt: skip
    assert can.stdout.strip() == "no"


def test_partitioned_parquet_outputs_in_the_cluster_match_pyfunc_predict(
    kube_cluster: Any, kubectl: Kubectl, namespace: str, data: Path, iris_uri: str, iris_model: Path
) -> None:
    kubectl.apply(
        endpoint_and_deployment(iris_uri, settings={
            "miniBatchSize": MINI_BATCH_SIZE, "outputFormat": "parquet", "partitionOutputs": True,
        }),
        namespace,
    )  # fmt: skip
    done = cli(
        kube_cluster, namespace, "batch", "invoke", "iris", "--name", "parts",
        "--input", f"pvc://{CLAIM}/input", "--output", f"pvc://{CLAIM}/out/parts", timeout=JOB_TIMEOUT,
    )  # fmt: skip
    if done.returncode != 0:
        debug_dump(kubectl, namespace)
    assert done.returncode == 0, done.stdout + done.stderr
    status = (kubectl.get("batchjob", "parts", namespace) or {})["status"]
    assert status["outputUri"] == f"pvc://{CLAIM}/out/parts/predictions"
    assert status["progress"] == "3/3 (100%)"
    folder = data / "out" / "parts" / "predictions"
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == sorted(n.replace(".csv", ".parquet") for n in FILES)
    for name, frame in expected_predictions(iris_model).items():
        got = pd.read_parquet(folder / name.replace(".csv", ".parquet"))
        assert got["row"].tolist() == list(range(len(frame))) and set(got["file_name"]) == {name}
        assert got["prediction"].tolist() == frame["prediction"].tolist()
