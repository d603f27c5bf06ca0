"""`mlendpoints job run`: the Job it renders (what the webhook then serves) and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlendpoints.cli.app import cli
from mlendpoints.render.command_job import CommandJobError, render_command_job, rewrite_inputs
from mlendpoints.render.common import RenderSettings
from mlendpoints.render.model_inputs import inject_model_inputs, parse_model_inputs
from mlendpoints_serving import contract

SETTINGS = RenderSettings(serving_image="serving:dev", serving_image_gpu="serving:gpu")
INPUTS = {"model": "models:/diabetes@champion", "baseline-model": "models:/diabetes/1"}


def test_input_references_become_kubernetes_expansions_of_the_webhooks_env() -> None:
    assert rewrite_inputs("--model=${{inputs.model}}", INPUTS) == "--model=$(MLENDPOINTS_INPUT_MODEL)"
    assert rewrite_inputs("${{ inputs.baseline-model }}/MLmodel", INPUTS) == (
        "$(MLENDPOINTS_INPUT_BASELINE_MODEL)/MLmodel"
    )
    assert rewrite_inputs("$HOME ${{outputs.x}}", INPUTS) == "$HOME ${{outputs.x}}", "only inputs"
    with pytest.raises(CommandJobError, match=r"\$\{\{inputs.modle\}\} names no input .*--input modle=URI"):
        rewrite_inputs("${{inputs.modle}}", INPUTS)


def test_the_job_opts_in_to_the_webhook_and_its_pod_is_restricted() -> None:
    job = render_command_job(
        "serving:dev", ["python", "evaluate.py", "--model", "${{inputs.model}}"], INPUTS,
        namespace="ml", env={"ALPHA": "1"},
    )  # fmt: skip
    assert job["metadata"] == {
        "namespace": "ml", "generateName": "mlendpoints-job-",
        "labels": {"mlendpoints.io/command-job": "true"},
    }  # fmt: skip
    assert job["spec"]["backoffLimit"] == 0
    template = job["spec"]["template"]
    assert template["metadata"]["labels"][contract.LABEL_INJECT_MODELS] == "true"
    assert json.loads(template["metadata"]["annotations"][contract.ANNOTATION_MODELS]) == INPUTS
    pod = template["spec"]
    [main] = pod["containers"]
    assert main["command"] == ["python", "evaluate.py", "--model", "$(MLENDPOINTS_INPUT_MODEL)"]
    assert {"name": "ALPHA", "value": "1"} in main["env"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert main["securityContext"] == {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    # What the webhook does with it: the env var the command expands is the one it sets.
    mutated = inject_model_inputs(template, parse_model_inputs(template["metadata"]["annotations"]), SETTINGS)
    env = {e["name"]: e.get("value") for e in mutated["spec"]["containers"][0]["env"]}
    assert env["MLENDPOINTS_INPUT_MODEL"] == "/var/mlendpoints/inputs/model"
    assert env["MLENDPOINTS_INPUT_BASELINE_MODEL"] == "/var/mlendpoints/inputs/baseline-model"


def test_a_job_without_inputs_is_a_plain_restricted_job() -> None:
    job = render_command_job("img", ["true"], {}, name="plain")
    assert job["metadata"]["name"] == "plain" and "namespace" not in job["metadata"]
    assert contract.LABEL_INJECT_MODELS not in job["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "model=models:/diabetes@champion", "--", "echo", "${{inputs.other}}"],
         "${{inputs.other}} names no input (inputs: model); add --input other=URI"),
        (["--input", "Model=models:/diabetes/1", "--", "true"], "the name must be a DNS label"),
        (["--input", "model=ftp://x/y", "--", "true"], "model"),
        (["--input", "model", "--", "true"], "--input 'model': expected NAME=VALUE"),
    ],
)  # fmt: skip
def test_bad_inputs_are_refused_before_the_cluster_is_asked(
    args: list[str], message: str, tmp_path: Path
) -> None:
    # A kubeconfig that does not exist: reaching the cluster would be a different error.
    result = CliRunner().invoke(
        cli, ["job", "run", "--kubeconfig", str(tmp_path / "none"), "--image", "img", *args]
    )
    assert result.exit_code != 0
    assert message in str(result.exception) or message in result.output, (result.output, result.exception)
    assert "no usable Kubernetes configuration" not in result.output


def test_a_commands_exit_status_is_the_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`job run` exits with the command's status: click hands a raised Exit back as a return value."""
    import click

    from mlendpoints.cli import app

    @click.command("exit-three")
    def exit_three() -> None:
        raise click.exceptions.Exit(3)

    monkeypatch.setitem(app.cli.commands, "exit-three", exit_three)
    assert app.run(["exit-three"]) == 3
    assert app.run(["job", "--help"]) == 0
