"""The import's check with Azure's own loaders (azure-ai-ml 1.23, offline, the `mlendpoints[azure]` extra).

The loaders are Azure's real code, installed by the test extra: nothing here stands in for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlendpoints.azureml import azure_check, import_document, import_file
from mlendpoints.azureml.context import AzureKind, ImportOptions, ImportRefused
from mlendpoints.cli.app import cli
from mlendpoints.local import manifests
from tests.fixtures.azureml import copy_corpus, corpus_files

pytestmark = pytest.mark.skipif(
    not azure_check.available(), reason="azure-ai-ml is not installed (the test extra installs it)"
)
CHECKED = ImportOptions(
    collect_to="s3://collected/records", job_image="registry.example/serving:1", azure_check=True
)
SCHEMA = "https://azuremlschemas.azureedge.net/latest/{}.schema.json"


@pytest.mark.parametrize("name", [str(p) for p in corpus_files()])
def test_azure_accepts_every_corpus_file(tmp_path: Path, name: str) -> None:
    root = copy_corpus(tmp_path)
    doc = yaml.safe_load((root / name).read_text())
    from mlendpoints.azureml.importer import azure_kind

    assert azure_check.azure_refusal(root / name, azure_kind(root / name, doc), doc) is None
    assert import_file(root / name, CHECKED)  # and the import with the check on goes through


def deployment(**fields: Any) -> dict[str, Any]:
    return {
        "$schema": SCHEMA.format("managedOnlineDeployment"),
        "name": "blue",
        "endpoint_name": "ep",
        "model": "azureml:diabetes:1",
        "instance_type": "Standard_DS3_v2",
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "azure_says"),
    [
        ({"instance_count": "many"}, '"instance_count": [\n    "Not a valid integer."'),
        ({"request_settings": {"request_timeout": 5}}, '"request_timeout": [\n      "Unknown field."'),
        ({"model": {"path": "./no-such-folder"}}, "No such file or directory"),
    ],
)
def test_a_file_azure_rejects_is_refused_in_azures_words(
    tmp_path: Path, fields: dict[str, Any], azure_says: str
) -> None:
    with pytest.raises(ImportRefused) as refused:
        import_document(tmp_path / "blue.yml", deployment(**fields), CHECKED)
    message = refused.value.message
    assert message.startswith(
        f"{tmp_path / 'blue.yml'}: Azure's own loader (load_online_deployment) refuses it:"
    )
    assert "Validation for ManagedOnlineDeploymentSchema failed" in message
    assert azure_says in message
    assert "Visit this link" not in message and "VS code extension" not in message  # Azure's links, cut
    assert "--no-azure-check" in (refused.value.hint or "")


def test_without_the_check_the_import_gives_its_own_findings(tmp_path: Path) -> None:
    doc = deployment(request_settings={"request_timeout": 5})
    imported = import_document(tmp_path / "blue.yml", doc, ImportOptions())
    assert any(f.field == "request_settings.request_timeout" for f in imported.findings)


def test_each_kind_goes_to_its_loader() -> None:
    assert azure_check.loader_name(AzureKind.MODEL_BATCH_DEPLOYMENT, {"type": "model"}) == (
        "load_model_batch_deployment"
    )
    # The older batchDeployment layout (no type, settings at the top level) has its own loader.
    older = {"mini_batch_size": 10, "output_action": "append_row"}
    assert azure_check.loader_name(AzureKind.MODEL_BATCH_DEPLOYMENT, older) == "load_batch_deployment"
    assert azure_check.loader_name(AzureKind.COMMAND_JOB, {}) == "load_job"
    assert azure_check.loader_name(AzureKind.KUBERNETES_ONLINE_ENDPOINT, {}) == "load_online_endpoint"


def test_an_older_layout_batch_deployment_passes_azures_loader(tmp_path: Path) -> None:
    doc = {
        "$schema": SCHEMA.format("batchDeployment"),
        "name": "bd",
        "endpoint_name": "be",
        "model": "azureml:m:1",
        "compute": "azureml:cpu-cluster",
        "mini_batch_size": 10,
        "output_action": "append_row",
    }
    assert azure_check.azure_refusal(tmp_path / "d.yml", AzureKind.MODEL_BATCH_DEPLOYMENT, doc) is None


def test_the_cli_checks_by_default_and_can_be_told_not_to(tmp_path: Path) -> None:
    path = tmp_path / "blue.yml"
    path.write_text(yaml.safe_dump(deployment(request_settings={"request_timeout": 5})))
    checked = CliRunner().invoke(cli, ["import", "azureml", str(path)])
    assert isinstance(checked.exception, ImportRefused)
    assert "Azure's own loader" in checked.exception.message
    unchecked = CliRunner().invoke(cli, ["import", "azureml", str(path), "--no-azure-check"])
    assert unchecked.exit_code == 0, unchecked.output
    assert "request_settings.request_timeout: not imported" in unchecked.stderr


def test_asking_for_the_check_without_azure_ai_ml_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "blue.yml"
    path.write_text(yaml.safe_dump(deployment()))
    # Stands for an environment without the extra: the package is installed here.
    monkeypatch.setattr(azure_check, "available", lambda: False)
    result = CliRunner().invoke(cli, ["import", "azureml", str(path), "--azure-check"])
    assert "azure-ai-ml is not installed" in result.exception.message  # type: ignore[union-attr]
    assert result.exception.hint == azure_check.INSTALL_HINT  # type: ignore[union-attr]
    assert CliRunner().invoke(cli, ["import", "azureml", str(path)]).exit_code == 0  # default: unchecked


def test_local_up_reports_azures_refusal(tmp_path: Path) -> None:
    path = tmp_path / "blue.yml"
    path.write_text(yaml.safe_dump(deployment(instance_count="many")))
    with pytest.raises(ImportRefused, match="Azure's own loader"):
        manifests.load([path])
