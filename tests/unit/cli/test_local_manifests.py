"""The YAML of `local up`: validated by the cluster's rules, errors naming file, object and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlendpoints.errors import UserError
from mlendpoints.local.manifests import load, select_endpoint

ENDPOINT = """\
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineEndpoint
metadata: {name: diabetes}
spec: {traffic: {blue: 100}}
"""
BLUE = """\
---
apiVersion: mlendpoints.io/v1alpha1
kind: OnlineDeployment
metadata: {name: blue}
spec: {endpointName: diabetes, model: "models:/diabetes/1"}
"""


def select(tmp_path: Path, text: str) -> object:
    (tmp_path / "e.yaml").write_text(text)
    return select_endpoint(load([tmp_path]))


def test_a_valid_endpoint_with_its_deployment_and_configmap(tmp_path: Path) -> None:
    configmap = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: code}\ndata: {score.py: x}\n"
    spec = select(tmp_path, ENDPOINT + BLUE + configmap)
    assert spec.name == "diabetes"  # type: ignore[attr-defined]
    assert list(spec.deployments) == ["blue"]  # type: ignore[attr-defined]
    assert spec.deployments["blue"].spec.instanceCount == 1  # type: ignore[attr-defined]
    assert [o["kind"] for o in spec.objects] == ["ConfigMap"]  # type: ignore[attr-defined]


BATCH = "---\napiVersion: mlendpoints.io/v1alpha1\nkind: BatchEndpoint\nmetadata: {name: b}\n"
INVALID = [
    (ENDPOINT.replace("blue: 100", "blue: 80") + BLUE, "spec.traffic: percentages sum to 80, must be 0"),
    (ENDPOINT.replace("blue: 100", "green: 100") + BLUE, "spec.traffic.green: no OnlineDeployment 'green'"),
    (ENDPOINT + BLUE.replace("models:/diabetes/1", "v1"), "spec.model: 'v1' is not a model URI"),
    (ENDPOINT + BLUE.replace("endpointName: diabetes", "endpointName: x"), "spec.endpointName: 'x'"),
    (ENDPOINT + BLUE.replace("model:", "instanceCount: 0, model:"), "spec.instanceCount: Input should be"),
    (ENDPOINT + "---\n" + ENDPOINT.replace("diabetes", "iris"), "exactly one OnlineEndpoint, found 2"),
    (BLUE, "expected exactly one OnlineEndpoint, found 0"),
    (ENDPOINT + BLUE + BATCH, "BatchEndpoint 'b' cannot run as a local endpoint"),
    (ENDPOINT.replace("v1alpha1", "v1"), "apiVersion: 'mlendpoints.io/v1', expected"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_resources_are_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        select(tmp_path, text)
    assert message in err.value.message
    assert str(tmp_path / "e.yaml") in err.value.message or "exactly one" in err.value.message


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"e\.yaml:\d+: invalid YAML"):
        select(tmp_path, "kind: OnlineEndpoint\nmetadata:\n  name: [unclosed\n")


def test_an_empty_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no \.yaml files in this directory"):
        load([tmp_path])
