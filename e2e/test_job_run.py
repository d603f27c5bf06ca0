"""End to end on the cluster: `mlendpoints job run`, a command with model inputs (Azure's command jobs).

`--input model=models:/diabetes@champion` and `'${{inputs.model}}'` in the command: the CLI creates
the Job, the operator's webhook fetches the model into the pod, the command's logs stream back and
the CLI exits with the command's status; a URI naming nothing fails in the init container and the
CLI says why (its termination message); an alias that does not exist is refused at admission and
the CLI says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.operator_deploy import Kubectl, wait_for
from e2e.test_model_inputs import EVALUATE, local_predictions, mutating_webhook_ready

pytest.importorskip(
    "e2e.localcluster.fixture", reason="the local cluster fixture (e2e/localcluster) is not there"
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "mlendpoints")
TIMEOUT = 300


@pytest.fixture(scope="module")
def webhook(kubectl: Kubectl) -> Kubectl:
    wait_for("the mutating webhook registration", lambda: mutating_webhook_ready(kubectl), 60)
    return kubectl


def job_run(kube_cluster: Any, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig)}
    return subprocess.run(
        [CLI, "job", "run", "-n", namespace, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_job_run_evaluates_the_model_input_and_streams_its_logs(
    kube_cluster: Any, webhook: Kubectl, images: Any, namespace: str, tmp_path: Path
) -> None:
    done = job_run(
        kube_cluster, namespace, "--image", images.serving, "--name", "evaluate",
        "--input", "model=models:/diabetes@champion",
        "--", "python", "-c", EVALUATE, "${{inputs.model}}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["dir"] == "/var/mlendpoints/inputs/model" and "MLmodel" in result["files"]
    assert result["predictions"] == pytest.approx(local_predictions(tmp_path, 1.0)), "champion is version 1"
    assert "job evaluate succeeded" in done.stdout
    job = webhook.get("job", "evaluate", namespace) or {}
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1] == "$(MLENDPOINTS_INPUT_MODEL)"
    pods = webhook.json("-n", namespace, "get", "pods", "-l", "job-name=evaluate")["items"]
    resolved = json.loads(pods[0]["metadata"]["annotations"]["mlendpoints.io/resolved-models"])
    assert resolved == {"model": "models:/diabetes/1"}


def test_job_run_exits_with_the_commands_status(
    kube_cluster: Any, webhook: Kubectl, images: Any, namespace: str
) -> None:
    done = job_run(
        kube_cluster, namespace, "--image", images.serving, "--input", "model=models:/diabetes/1",
        "--", "python", "-c", "import sys; print('evaluating', sys.argv[1]); sys.exit(3)",
        "${{inputs.model}}",
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "evaluating /var/mlendpoints/inputs/model" in done.stdout
    assert "the command exited with code 3" in done.stderr


def test_a_wrong_uri_fails_in_the_fetch_and_job_run_says_why(
    kube_cluster: Any, webhook: Kubectl, images: Any, namespace: str
) -> None:
    done = job_run(
        kube_cluster, namespace, "--image", images.serving, "--input", "model=models:/diabetes/99",
        "--", "python", "-c", "print('never')", "${{inputs.model}}",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "never" not in done.stdout
    assert "model input model failed: mlendpoints-fetch failed: not found: models:/diabetes/99" in " ".join(
        done.stderr.split()
    ), done.stderr


def test_an_alias_refused_at_admission_is_reported(
    kube_cluster: Any, webhook: Kubectl, images: Any, namespace: str
) -> None:
    done = job_run(
        kube_cluster, namespace, "--image", images.serving, "--timeout", "60",
        "--input", "model=models:/diabetes@nobody", "--", "true",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    text = " ".join(done.stderr.split())
    assert "the pod was not created" in text and "nobody" in text, done.stderr
