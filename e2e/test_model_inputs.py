"""End to end on the cluster: model inputs for any pod (the operator's mutating webhook).

A Job labelled `mlendpoints.io/inject-models: "true"` evaluates the registered model through
`models:/diabetes@champion` (pinned to version 1 at admission, recorded on the pod); a single-file run
artifact arrives as `<dir>/<filename>`; a URI naming nothing fails in the init container with its reason
in the pod's termination message; an alias that does not exist is refused at admission, naming the
input; a pod without the label is left untouched, and still admitted while the webhook is down (its
objectSelector keeps it out of the webhook's path) while a labelled one is refused.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from e2e.operator_deploy import OPERATOR, OPERATOR_NAMESPACE, OPERATOR_PODS, Kubectl, wait_for
from examples import models as builders
from mlendpoints_serving import contract

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

JOB_TIMEOUT = 240
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
# Loads the MLflow model whose directory is argv[1] and prints one prediction and where it was.
EVALUATE = f"""
import json, os, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
row = pd.DataFrame([[0.01] * 10], columns={COLUMNS!r})
print("RESULT " + json.dumps({{
    "predictions": [float(p) for p in model.predict(row)],
    "dir": sys.argv[1],
    "azureml_model_dir": os.environ.get("AZUREML_MODEL_DIR"),
    "files": sorted(os.listdir(sys.argv[1])),
}}))
"""
# Opens a single pickled estimator with the library that wrote it (joblib).
OPEN_PICKLE = """
import json, os, sys
import joblib
print("RESULT " + json.dumps({
    "files": sorted(os.listdir(sys.argv[1])),
    "predictions": [float(p) for p in joblib.load(os.path.join(sys.argv[1], "model.pkl")).predict([[0.5]])],
}))
"""
RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def job(name: str, image: str, inputs: dict[str, str], script: str, labelled: bool = True) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"annotations": {contract.ANNOTATION_MODELS: json.dumps(inputs)}}
    if labelled:
        template_meta["labels"] = {contract.LABEL_INJECT_MODELS: "true"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": template_meta,
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "evaluate",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            # Kubernetes expands $(VAR) in args from the container's env.
                            "command": ["python", "-c", script, "$(MLENDPOINTS_INPUT_MODEL)"],
                            "env": [{"name": "HOME", "value": "/tmp"}],
                            "securityContext": RESTRICTED,
                            "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}},
                        }
                    ],
                },
            },
        },
    }


def bare_pod(name: str, image: str, inputs: dict[str, str], labelled: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": {contract.ANNOTATION_MODELS: json.dumps(inputs)}}
    if labelled:
        meta["labels"] = {contract.LABEL_INJECT_MODELS: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": image, "command": ["true"], "securityContext": RESTRICTED}
            ],
        },
    }


def mutating_webhook_ready(kubectl: Kubectl) -> bool:
    proc = kubectl.try_run("get", "mutatingwebhookconfiguration", "mlendpoints.io", "-o", "json")
    if proc.returncode != 0:
        return False
    hooks = json.loads(proc.stdout).get("webhooks", [])
    return any(h.get("clientConfig", {}).get("caBundle") for h in hooks)


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl) -> Kubectl:
    """The operator with its mutating webhook registered: an objectSelector on the opt-in label only."""
    wait_for("the mutating webhook registration", lambda: mutating_webhook_ready(kubectl), 60)
    [hook] = kubectl.json("get", "mutatingwebhookconfiguration", "mlendpoints.io")["webhooks"]
    assert hook["objectSelector"] == {
        "matchExpressions": [{"key": contract.LABEL_INJECT_MODELS, "operator": "In", "values": ["true"]}]
    }
    assert hook["failurePolicy"] == "Fail"
    return kubectl


def job_pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        pods = kubectl.json("-n", namespace, "get", "pods", "-l", f"job-name={name}")["items"]
        return pods[0] if pods else None

    pod: dict[str, Any] = wait_for(f"a pod of Job {name}", found, 60)
    return pod


def finished(kubectl: Kubectl, namespace: str, name: str) -> str:
    """'Complete' or 'Failed', with the Job's pod's logs and events on timeout."""

    def state() -> str | None:
        status = (kubectl.get("job", name, namespace) or {}).get("status", {})
        for cond in status.get("conditions", []):
            if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
                return str(cond["type"])
        return None

    try:
        result: str = wait_for(f"Job {name} to finish", state, JOB_TIMEOUT, interval=2)
    except TimeoutError as exc:
        described = kubectl.run("-n", namespace, "describe", "pods", "-l", f"job-name={name}", check=False)
        raise AssertionError(f"{exc}\n{described[-4000:]}") from None
    return result


def result_line(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    logs = kubectl.run("-n", namespace, "logs", f"job/{name}", "-c", "evaluate")
    [line] = [line for line in logs.splitlines() if line.startswith("RESULT ")]
    parsed: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return parsed


def local_predictions(tmp_path: Path, alpha: float) -> list[float]:
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(
        str(builders.save_diabetes_regressor(tmp_path / f"a{alpha}", alpha=alpha))
    )
    return [float(p) for p in model.predict(pd.DataFrame([[0.01] * 10], columns=COLUMNS))]


def test_a_job_evaluates_the_registered_model_through_its_alias(
    operator: Kubectl, images: Any, namespace: str, tmp_path: Path
) -> None:
    operator.apply(
        [job("evaluate", images.serving, {"model": "models:/diabetes@champion"}, EVALUATE)], namespace
    )
    pod = job_pod(operator, namespace, "evaluate")
    # Pinned at admission: champion is version 1 in the fixture's registry.
    annotations = pod["metadata"]["annotations"]
    assert json.loads(annotations[contract.ANNOTATION_RESOLVED_MODELS]) == {"model": "models:/diabetes/1"}
    [fetch] = pod["spec"]["initContainers"]
    assert fetch["args"][:2] == ["--model-uri", "models:/diabetes/1"]
    assert fetch["securityContext"]["runAsNonRoot"] is True
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    assert fetch["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert finished(operator, namespace, "evaluate") == "Complete"
    result = result_line(operator, namespace, "evaluate")
    assert result["dir"] == "/var/mlendpoints/inputs/model"
    assert result["azureml_model_dir"] == "/var/mlendpoints/inputs/model"
    assert "MLmodel" in result["files"]
    # Version 1 (alpha 1.0), not version 2 (alpha 0.1).
    assert result["predictions"] == pytest.approx(local_predictions(tmp_path, 1.0))
    assert result["predictions"] != pytest.approx(local_predictions(tmp_path, 0.1))


def test_a_single_file_run_artifact_arrives_as_a_file_in_a_directory(
    operator: Kubectl, images: Any, namespace: str, mlflow_server: Any, tmp_path: Path
) -> None:
    import joblib
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("mlendpoints-tests")
    run = client.create_run(experiment.experiment_id if experiment else client.create_experiment("inputs"))
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 10.0]), tmp_path / "model.pkl")
    client.log_artifact(run.info.run_id, str(tmp_path / "model.pkl"))
    client.set_terminated(run.info.run_id)
    uri = f"runs:/{run.info.run_id}/model.pkl"
    operator.apply([job("single-file", images.serving, {"model": uri}, OPEN_PICKLE)], namespace)
    assert finished(operator, namespace, "single-file") == "Complete"
    result = result_line(operator, namespace, "single-file")
    assert result["files"] == [".mlendpoints-fetch.json", "model.pkl"]
    assert result["predictions"] == pytest.approx([5.0])


def test_a_wrong_uri_fails_in_the_init_container_with_the_reason_in_the_termination_message(
    operator: Kubectl, images: Any, namespace: str
) -> None:
    operator.apply([job("wrong", images.serving, {"model": "models:/diabetes/99"}, EVALUATE)], namespace)
    assert finished(operator, namespace, "wrong") == "Failed"
    pod = job_pod(operator, namespace, "wrong")
    [status] = pod["status"]["initContainerStatuses"]
    terminated = status["state"]["terminated"]
    assert terminated["exitCode"] != 0
    assert terminated["message"].startswith("mlendpoints-fetch failed: not found: models:/diabetes/99"), (
        terminated
    )
    # The main container never started.
    [main] = pod["status"]["containerStatuses"]
    assert "waiting" in main["state"] or main["state"].get("terminated", {}).get("reason") != "Completed"


def test_an_alias_that_does_not_exist_is_refused_at_admission_naming_the_input(
    operator: Kubectl, images: Any, namespace: str
) -> None:
    pod = bare_pod("no-alias", images.serving, {"model": "models:/diabetes@nobody"}, labelled=True)
    proc = operator.try_run("-n", namespace, "apply", "-f", "-", stdin=json.dumps(pod))
    assert proc.returncode != 0
    assert "annotation mlendpoints.io/models, input 'model'" in proc.stderr, proc.stderr
    assert "models:/diabetes@nobody" in proc.stderr


def test_a_bad_annotation_is_refused_naming_the_annotation(
    operator: Kubectl, images: Any, namespace: str
) -> None:
    pod = bare_pod("bad", images.serving, {"Model": "models:/diabetes/1"}, labelled=True)
    proc = operator.try_run("-n", namespace, "apply", "-f", "-", stdin=json.dumps(pod))
    assert proc.returncode != 0
    assert "annotation mlendpoints.io/models, input 'Model': the name must be a DNS label" in proc.stderr


def test_an_unlabelled_pod_is_left_untouched(operator: Kubectl, images: Any, namespace: str) -> None:
    operator.apply(
        [bare_pod("plain", images.serving, {"model": "models:/diabetes@champion"}, labelled=False)], namespace
    )
    pod = operator.json("-n", namespace, "get", "pod", "plain")
    assert "initContainers" not in pod["spec"]
    assert contract.ANNOTATION_RESOLVED_MODELS not in pod["metadata"]["annotations"]
    assert not any(v["name"].startswith("mlendpoints-") for v in pod["spec"].get("volumes", []))


def test_with_the_webhook_down_unlabelled_pods_are_admitted_and_labelled_ones_refused(
    operator: Kubectl, images: Any, namespace: str
) -> None:
    """The registration is persistent and its objectSelector names the label: an operator outage blocks
    only the pods that asked for inputs (which would otherwise run without them). Runs last: it stops
    the operator and starts it again."""
    operator.run("-n", OPERATOR_NAMESPACE, "scale", f"deployment/{OPERATOR}", "--replicas=0")
    try:
        # `kubectl wait --for=delete -l` fails once nothing matches; poll instead.
        wait_for(
            "the operator pods to be gone",
            lambda: not operator.json("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", OPERATOR_PODS)["items"],
            120,
        )
        assert mutating_webhook_ready(operator)  # still registered
        name = f"plain-{uuid.uuid4().hex[:6]}"
        operator.apply([bare_pod(name, images.serving, {"model": "s3://b/m"}, labelled=False)], namespace)
        assert "initContainers" not in operator.json("-n", namespace, "get", "pod", name)["spec"]
        pod = bare_pod("labelled", images.serving, {"model": "s3://b/m"}, labelled=True)
        proc = operator.try_run("-n", namespace, "apply", "-f", "-", stdin=json.dumps(pod))
        assert proc.returncode != 0
        assert "inject-model-inputs" in proc.stderr, proc.stderr  # the webhook that failed is named
    finally:
        operator.run("-n", OPERATOR_NAMESPACE, "scale", f"deployment/{OPERATOR}", "--replicas=1")
        operator.run("-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{OPERATOR}",
                     "--timeout=180s", timeout=200)  # fmt: skip
