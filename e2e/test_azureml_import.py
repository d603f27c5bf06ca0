"""Azure ML YAML imports to resources a real API server accepts: the CRDs' schema and CEL rules.

Every file of the corpus (tests/data/azureml) is imported as `mlendpoints import
azureml --collect-to ... --job-image ...` imports it, and each object it becomes
(the resource or Job, and its code ConfigMap) is created with a server-side dry run against the CRDs alone, no
operator and no webhook: what `kubectl apply` of the import meets on a cluster.
Nothing is stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.localcluster.fixture import KubeCluster
from mlendpoints.api.common import API_GROUP, API_VERSION
from mlendpoints.azureml import ImportOptions, import_file
from tests.fixtures.azureml import copy_corpus, corpus_files

pytestmark = [pytest.mark.cluster]
PLURALS = {
    "OnlineEndpoint": "onlineendpoints",
    "OnlineDeployment": "onlinedeployments",
    "BatchEndpoint": "batchendpoints",
    "BatchDeployment": "batchdeployments",
}
IMPORTABLE = [str(p) for p in corpus_files()]
# What the CLI's --collect-to and --job-image give: a deployment with data_collector
# is refused without a destination, a command job without an environment image needs one.
OPTIONS = ImportOptions(collect_to="s3://collected/records", job_image="registry.example/serving:1")


def dry_run_create(cluster: KubeCluster, namespace: str, obj: dict[str, Any]) -> str | None:
    """None when the API server accepts the object; else its error message."""
    try:
        if obj["kind"] == "ConfigMap":
            client.CoreV1Api(cluster.api_client).create_namespaced_config_map(namespace, obj, dry_run="All")
        elif obj["kind"] == "Job":
            client.BatchV1Api(cluster.api_client).create_namespaced_job(namespace, obj, dry_run="All")
        else:
            client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURALS[obj["kind"]], obj, dry_run="All"
            )
    except ApiException as exc:
        return f"{exc.status}: {json.loads(exc.body or '{}').get('message', exc.body)}"
    return None


def test_the_corpus_has_every_kind() -> None:
    assert {"online/kubernetes/blue-deployment.yml", "batch/mlflow/deployment.yml"} <= set(IMPORTABLE)


@pytest.mark.parametrize("name", IMPORTABLE)
def test_imported_resources_pass_the_crd_schema_and_cel_rules(
    kube_cluster: KubeCluster, namespace: str, crds: None, tmp_path: Path, name: str
) -> None:
    root = copy_corpus(tmp_path)
    objects = [obj for item in import_file(root / name, OPTIONS) for obj in item.objects]
    assert objects[-1]["kind"] in {*PLURALS, "Job"}
    refused = {
        f"{o['kind']}/{o['metadata']['name']}": dry_run_create(kube_cluster, namespace, o) for o in objects
    }
    assert all(message is None for message in refused.values()), refused


def test_an_invalid_import_is_what_the_api_server_refuses(
    kube_cluster: KubeCluster, namespace: str, crds: None, tmp_path: Path
) -> None:
    """The import's own check and the CEL rule agree: the rule the import refuses, the API server refuses."""
    root = copy_corpus(tmp_path)
    [imported] = import_file(root / "online/kubernetes/blue-deployment.yml")
    without_cpu = json.loads(json.dumps(imported.resource))
    del without_cpu["spec"]["resources"]["requests"]["cpu"]
    message = dry_run_create(kube_cluster, namespace, without_cpu)
    assert message is not None and "required by scaleSettings.type targetUtilization" in message, message
