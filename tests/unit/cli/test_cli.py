"""The command tree: every command documents an example; errors are one line plus a hint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mlendpoints.cli.app import cli

CLI = str(Path(sys.executable).parent / "mlendpoints")


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found += all_commands(command, path)
    return found


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_every_command_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"mlendpoints {' '.join(path)}" in result.output or isinstance(cli.commands[path[0]], click.Group)


def test_the_expected_commands_exist() -> None:
    names = {" ".join(p) for p in all_commands()}
    assert {
        "local", "local up", "local ls", "local logs", "local down", "status", "invoke",
        "get-credentials", "regenerate-keys", "logs", "package",
    } <= names  # fmt: skip


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLENDPOINTS_LOCAL_HOME": str(home)}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_errors_are_one_line_and_a_hint_without_traceback(tmp_path: Path) -> None:
    done = run("local", "logs", "nope", home=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: no local endpoint 'nope' (known: none)",
        "hint: start it with `mlendpoints local up -f ...`",
    ]


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    done = run("--debug", "local", "logs", "nope", home=tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "error: no local endpoint 'nope'" in done.stderr


def test_missing_kubeconfig_is_explained(tmp_path: Path) -> None:
    done = run("status", "--kubeconfig", str(tmp_path / "missing"), home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no usable Kubernetes configuration")
    assert "hint: set KUBECONFIG" in done.stderr and "Traceback" not in done.stderr


def test_unreachable_cluster_names_the_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: models}}]\n"
    )
    done = run("status", "--kubeconfig", str(kubeconfig), home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot connect to http://127.0.0.1:9"), done.stderr
    assert "Traceback" not in done.stderr


def test_invoke_local_without_endpoint_is_refused(tmp_path: Path) -> None:
    request = tmp_path / "r.json"
    request.write_text("{}")
    done = run("invoke", "diabetes", "--local", "--request-file", str(request), home=tmp_path)
    assert done.returncode == 1
    assert "no running local endpoint 'diabetes'" in done.stderr
