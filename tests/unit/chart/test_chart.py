"""The Helm chart, rendered and linted by the real Helm CLI (scripts/helm.sh builds it on first use)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "mlendpoints"
NAMESPACE = "mlendpoints-system"
# Cluster-scoped resources the operator may be granted through a ClusterRole in namespaced mode.
CLUSTER_SCOPED = {
    "customresourcedefinitions",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
    # authMode token: the routers' ClusterRoleBindings, and bind on the router-auth ClusterRole only.
    "clusterrolebindings",
    "clusterroles",
}
ROUTER_AUTH_ROLE = "mlendpoints-router-auth-delegator"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "helm.sh"), *args], capture_output=True, text=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@pytest.fixture(scope="session", autouse=True)
def helm_built() -> None:
    """The project's Helm, built from its Go module the first time (about 75 s on 2 cores)."""
    assert helm("version", "--short").stdout.startswith("v3.22.0")


def render(values: dict[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
    args = ["template", "mlendpoints", str(CHART), "--namespace", NAMESPACE, *extra]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    docs = yaml.safe_load_all(helm(*args).stdout)
    return [d for d in docs if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def operator_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(docs, "Deployment")
    return deployment["spec"]["template"]["spec"]


def env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = operator_pod(docs)["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "ha": {"replicas": 3},
    "cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "own-secret": {"webhook": {"existingSecret": "my-tls"}},
    "no-webhook": {"webhook": {"enabled": False}, "metrics": {"enabled": False}},
    "everything": {
        "replicas": 2,
        "watchNamespaces": ["team-a"],
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "affinity": {"podAntiAffinity": {}},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/a": "b"},
        "commonLabels": {"team": "ml"},
        "imagePullSecrets": [{"name": "regcred"}],
        "mlflow": {"trackingUri": "http://mlflow:5000", "credentialsSecret": "mlflow-creds"},
        "serving": {"imagePullSecrets": ["regcred"]},
        "objectStore": {
            "s3": {"credentialsSecret": "s3-creds"},
            "gcs": {"credentialsSecret": "gcs-key"},
            "azure": {"credentialsSecret": "azure-creds"},
        },
    },
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_passes(name: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[name]))
    out = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_operator_pod_meets_the_restricted_pod_security_profile(name: str) -> None:
    pod = operator_pod(render(VALUE_SETS[name]))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & {k for k, v in pod.items() if v}
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= {"emptyDir", "secret", "configMap", "projected"}, volume
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert not sc.get("privileged")
        assert container["livenessProbe"] and container["readinessProbe"]
        assert container["resources"]["limits"]["cpu"] and container["resources"]["limits"]["memory"]
        assert not any("hostPort" in p for p in container["ports"])


def test_scheduling_and_pod_metadata_come_from_values() -> None:
    docs = render(VALUE_SETS["everything"])
    pod = operator_pod(docs)
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["affinity"] == {"podAntiAffinity": {}}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    (deployment,) = of_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/a": "b"}
    assert all(d["metadata"]["labels"]["team"] == "ml" for d in docs)
    assert env(docs)["MLENDPOINTS_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env(docs)["MLENDPOINTS_MLFLOW_CREDENTIALS_SECRET"] == "mlflow-creds"
    assert len(of_kind(docs, "ServiceMonitor")) == 1


def rules_of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The operator's rules of that kind (the routers' auth-delegator ClusterRole left out)."""
    roles = [r for r in of_kind(docs, kind) if r["metadata"]["name"] != ROUTER_AUTH_ROLE]
    return [rule for role in roles for rule in role["rules"]]


def test_cluster_mode_one_cluster_role_and_no_roles() -> None:
    docs = render()
    assert sorted(r["metadata"]["name"] for r in of_kind(docs, "ClusterRole")) == [
        "mlendpoints-operator",
        ROUTER_AUTH_ROLE,
    ]
    assert of_kind(docs, "Role") == [] and of_kind(docs, "KopfPeering") == []
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mlendpoints-operator", "namespace": NAMESPACE}
    ]
    granted = {res for rule in rules_of(docs, "ClusterRole") for res in rule["resources"]}
    assert {"onlineendpoints", "deployments", "secrets", "roles", "clusterkopfpeerings"} <= granted
    assert "MLENDPOINTS_NAMESPACES" not in env(docs)
    assert [p["metadata"]["name"] for p in of_kind(docs, "ClusterKopfPeering")] == ["mlendpoints"]


def test_namespaced_mode_roles_only_in_the_watched_namespaces() -> None:
    docs = render(VALUE_SETS["namespaced"])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(docs, "Role")}
    assert roles == {
        ("team-a", "mlendpoints-operator"),
        ("team-b", "mlendpoints-operator"),
        # The self-generated webhook certificate's Secret, in the operator's own namespace.
        (NAMESPACE, "mlendpoints-operator-webhook-tls"),
    }
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in of_kind(docs, "RoleBinding")}
    assert bindings == roles
    # The ClusterRole keeps only cluster-scoped objects: no namespaced resource cluster-wide.
    granted = {res for rule in rules_of(docs, "ClusterRole") for res in rule["resources"]}
    assert granted == CLUSTER_SCOPED
    (tls_role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["namespace"] == NAMESPACE]
    assert all(rule["verbs"] == ["create"] or rule.get("resourceNames") for rule in tls_role["rules"])
    assert json.loads(env(docs)["MLENDPOINTS_NAMESPACES"]) == ["team-a", "team-b"]
    # kopf peers in each watched namespace.
    assert {p["metadata"]["namespace"] for p in of_kind(docs, "KopfPeering")} == {"team-a", "team-b"}
    assert of_kind(docs, "ClusterKopfPeering") == []
    role_rules = next(r for r in of_kind(docs, "Role") if r["metadata"]["namespace"] == "team-a")["rules"]
    assert {res for rule in role_rules for res in rule["resources"]} >= {"onlineendpoints", "kopfpeerings"}


@pytest.mark.parametrize("name", ["default", "namespaced"])
def test_rbac_is_least_privilege(name: str) -> None:
    docs = render(VALUE_SETS[name])
    for rule in rules_of(docs, "ClusterRole") + rules_of(docs, "Role"):
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"escalate", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        if "bind" in rule["verbs"]:  # only the routers' auth-delegator role, by name
            assert rule == {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "resourceNames": [ROUTER_AUTH_ROLE],
                "verbs": ["bind"],
            }
        if "delete" in rule["verbs"]:
            assert set(rule["resources"]) <= {
                "jobs",
                "poddisruptionbudgets",
                "horizontalpodautoscalers",
                "networkpolicies",
                "clusterrolebindings",
            }
    # The webhook registration: the operator patches only its own configurations.
    webhook_rules = [
        r for r in rules_of(docs, "ClusterRole") if r["apiGroups"] == ["admissionregistration.k8s.io"]
    ]
    assert webhook_rules
    for rule in webhook_rules:
        assert rule["verbs"] == ["create"] or rule.get("resourceNames") == ["mlendpoints.io"], rule


def test_pdb_only_with_more_than_one_replica() -> None:
    assert of_kind(render(), "PodDisruptionBudget") == []
    assert of_kind(render({"replicas": 1}), "PodDisruptionBudget") == []
    docs = render({"replicas": 3})
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    (deployment,) = of_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_no_webhook_objects_when_disabled() -> None:
    docs = render({"webhook": {"enabled": False}})
    assert not any(k.startswith("MLENDPOINTS_WEBHOOK") for k in env(docs))
    (container,) = operator_pod(docs)["containers"]
    assert [p["name"] for p in container["ports"]] == ["health", "metrics"]
    (service,) = of_kind(docs, "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    granted = {res for rule in rules_of(docs, "ClusterRole") for res in rule["resources"]}
    assert not granted & {"validatingwebhookconfigurations", "mutatingwebhookconfigurations"}
    assert of_kind(docs, "Certificate") == []


def test_webhook_self_generated_certificate_by_default() -> None:
    docs = render()
    e = env(docs)
    assert e["MLENDPOINTS_WEBHOOK_SERVICE"] == "mlendpoints-operator"
    assert e["MLENDPOINTS_WEBHOOK_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "MLENDPOINTS_WEBHOOK_CERT_DIR" not in e
    assert of_kind(docs, "Certificate") == []
    (service,) = of_kind(docs, "Service")
    assert {"name": "webhook", "port": 9443, "targetPort": "webhook"} in service["spec"]["ports"]


def mounted_secret(docs: list[dict[str, Any]]) -> str:
    pod = operator_pod(docs)
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert env(docs)["MLENDPOINTS_WEBHOOK_CERT_DIR"] == mount["mountPath"]
    return str(volume["secret"]["secretName"])


def test_webhook_certificate_from_cert_manager() -> None:
    docs = render(VALUE_SETS["cert-manager"])
    (cert,) = of_kind(docs, "Certificate")
    assert mounted_secret(docs) == cert["spec"]["secretName"]
    assert cert["spec"]["dnsNames"][0] == f"mlendpoints-operator.{NAMESPACE}.svc"
    (issuer,) = of_kind(docs, "Issuer")
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}
    # A named issuer: no self-signed one rendered.
    docs = render(
        {"webhook": {"certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "ca"}}}}
    )
    assert of_kind(docs, "Issuer") == []
    assert of_kind(docs, "Certificate")[0]["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "ca"}


def test_webhook_certificate_from_a_users_secret() -> None:
    docs = render(VALUE_SETS["own-secret"])
    assert mounted_secret(docs) == "my-tls"
    assert of_kind(docs, "Certificate") == []
    both = {"webhook": {"existingSecret": "my-tls", "certManager": {"enabled": True}}}
    proc = helm(
        "template", "x", str(CHART), "--set-json", f"webhook={json.dumps(both['webhook'])}", check=False
    )
    assert proc.returncode != 0 and "choose one" in proc.stderr


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("replica=2", "additional properties 'replica' not allowed"),
        ('replicas="two"', "/replicas"),
        ('image={"repository": "r", "pullPolicy": "Sometimes"}', "/image/pullPolicy"),
        ('watchNamespaces=["Not_A_Namespace"]', "/watchNamespaces/0"),
        ('webhook={"enabled": "yes"}', "/webhook/enabled"),
        ('webhook={"certManager": {"enbled": true}}', "additional properties 'enbled' not allowed"),
    ],
)
def test_values_schema_refuses_typos_and_wrong_types(value: str, path: str) -> None:
    proc = helm("template", "x", str(CHART), "--set-json", value, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert path in proc.stderr


@pytest.mark.parametrize(
    ("version", "ok"), [("1.30.9", False), ("1.31.0", True), ("1.37.2", True), ("1.38.0", False)]
)
def test_kube_version_range(version: str, ok: bool) -> None:
    proc = helm("template", "x", str(CHART), "--kube-version", version, check=False)
    assert (proc.returncode == 0) == ok, proc.stderr


def test_versions_and_image_tags_follow_the_package() -> None:
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == package
    docs = render()
    (container,) = operator_pod(docs)["containers"]
    assert container["image"] == f"ghcr.io/mlendpoints/operator:{package}"
    assert env(docs)["MLENDPOINTS_SERVING_IMAGE"] == f"ghcr.io/mlendpoints/serving:{package}"
    assert env(docs)["MLENDPOINTS_SERVING_IMAGE_GPU"] == f"ghcr.io/mlendpoints/serving:{package}-cuda"


def test_extra_env_replaces_the_charts_own() -> None:
    docs = render({"extraEnv": [{"name": "MLENDPOINTS_SERVING_IMAGE", "value": "local/serving:dev"}]})
    (container,) = operator_pod(docs)["containers"]
    names = [e["name"] for e in container["env"]]
    assert names.count("MLENDPOINTS_SERVING_IMAGE") == 1
    assert env(docs)["MLENDPOINTS_SERVING_IMAGE"] == "local/serving:dev"


def test_crds_ship_in_the_chart() -> None:
    docs = render({}, "--include-crds")
    names = {d["metadata"]["name"] for d in of_kind(docs, "CustomResourceDefinition")}
    assert {
        "onlineendpoints.mlendpoints.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    } <= names


def test_readme_values_table_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chart_readme.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    documented = (CHART / "README.md").read_text()
    for key in ("watchNamespaces", "webhook.certManager.enabled", "podDisruptionBudget.minAvailable"):
        assert f"| `{key}` |" in documented


def test_defaults_for_rendered_pods_reach_the_operator() -> None:
    """Pull secrets and object-store credentials: values -> the operator's MLENDPOINTS_* settings."""
    got = env(render(VALUE_SETS["everything"]))
    assert json.loads(got["MLENDPOINTS_IMAGE_PULL_SECRETS"]) == ["regcred"]
    assert got["MLENDPOINTS_S3_CREDENTIALS_SECRET"] == "s3-creds"
    assert got["MLENDPOINTS_GCS_CREDENTIALS_SECRET"] == "gcs-key"
    assert got["MLENDPOINTS_AZURE_CREDENTIALS_SECRET"] == "azure-creds"
    assert not {k for k in env(render()) if k.endswith("_CREDENTIALS_SECRET") or k.endswith("PULL_SECRETS")}


def test_default_resources_of_rendered_containers_reach_the_operator() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["serving"]["defaultResources"]
    got = env(render())
    assert json.loads(got["MLENDPOINTS_DEFAULT_RESOURCES"]) == values["server"]
    assert json.loads(got["MLENDPOINTS_ROUTER_DEFAULT_RESOURCES"]) == values["router"]
    for which in values.values():
        assert which["requests"]["cpu"] and which["requests"]["memory"] and which["limits"]["memory"]


def test_model_server_network_policies_on_by_default_with_an_opt_out() -> None:
    assert env(render())["MLENDPOINTS_NETWORK_POLICIES"] == "true"
    assert "MLENDPOINTS_METRICS_FROM" not in env(render())
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    got = env(render({"serving": {"networkPolicy": {"enabled": False, "metricsFrom": peers}}}))
    assert got["MLENDPOINTS_NETWORK_POLICIES"] == "false"
    assert json.loads(got["MLENDPOINTS_METRICS_FROM"]) == peers


# Custom resources have no schema in Kubernetes' release (cert-manager's, the Prometheus Operator's,
# kopf's peering, whose CRD itself is validated here).
CUSTOM_GROUPS = {"cert-manager.io", "monitoring.coreos.com", "kopf.dev"}


@pytest.mark.parametrize("kube_version", ["1.31.0", "1.37.0"])
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_chart_is_valid_for_the_oldest_and_newest_supported_kubernetes(
    name: str, kube_version: str
) -> None:
    """Every rendered object against the strict OpenAPI schemas of that release (kubernetes-validate
    carries them offline): a misspelt or misplaced field fails here, before any cluster sees it."""
    docs = render(VALUE_SETS[name], "--include-crds", "--kube-version", kube_version)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue
        kubernetes_validate.validate(doc, kube_version, strict=True)
        checked += 1
    assert checked >= 10


def documented_checkov_skips() -> dict[str, str]:
    readme = (CHART / "README.md").read_text()
    table = readme.split("<!-- checkov-skips -->", 1)[1].split("<!-- /checkov-skips -->", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `")]
    return {row[1].strip().strip("`"): row[2].strip() for row in rows}


def test_security_scan_finds_nothing_but_the_documented_skips(tmp_path: Path) -> None:
    """checkov (scripts/checkov.sh, offline) over the chart rendered with every value set."""
    for name, values in VALUE_SETS.items():
        docs = render(values)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(docs))
    skips = documented_checkov_skips()
    assert skips and all(skips.values()), "every skip has its reason in the chart README"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "checkov.sh"), "-d", str(tmp_path), "--framework", "kubernetes",
         "--output", "json", "--quiet"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr
    report = json.loads(proc.stdout)
    failed = report["results"]["failed_checks"]
    undocumented = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for c in failed
        if c["check_id"] not in skips
    ]
    assert not undocumented, "\n".join(undocumented)
    stale = set(skips) - {c["check_id"] for c in failed}
    assert not stale, f"documented skips that no longer fail: {sorted(stale)}"
    assert report["summary"]["passed"] > 100  # the scan ran over every value set's objects


@pytest.mark.parametrize("name", ["default", "namespaced"])
def test_router_auth_delegator_role_has_exactly_the_two_review_verbs(name: str) -> None:
    docs = render(VALUE_SETS[name])
    (role,) = [r for r in of_kind(docs, "ClusterRole") if r["metadata"]["name"] == ROUTER_AUTH_ROLE]
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ]
    # The chart binds nothing to it (the operator binds each token-mode router): no binding names it.
    for binding in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] != ROUTER_AUTH_ROLE
    assert env(docs)["MLENDPOINTS_ROUTER_AUTH_CLUSTER_ROLE"] == ROUTER_AUTH_ROLE
    # The operator manages the bindings in either mode (they are cluster-scoped).
    (crb_rule,) = [r for r in rules_of(docs, "ClusterRole") if r["resources"] == ["clusterrolebindings"]]
    assert set(crb_rule["verbs"]) == {"get", "list", "watch", "create", "patch", "delete"}
    assert "resourceNames" not in crb_rule


def test_router_auth_role_matches_what_the_operator_renders() -> None:
    from mlendpoints.render.router_auth import ROUTER_AUTH_RULES

    (role,) = [r for r in of_kind(render(), "ClusterRole") if r["metadata"]["name"] == ROUTER_AUTH_ROLE]
    assert role["rules"] == ROUTER_AUTH_RULES
