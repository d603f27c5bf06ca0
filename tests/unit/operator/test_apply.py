"""The apply layer's diff (what counts as already applied) and the reconcile scheduler."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from mlendpoints.api.online import OnlineDeployment, OnlineEndpoint
from mlendpoints.api.validation import validate_deployment, validate_endpoint
from mlendpoints.operator.kube import NamespaceTerminating, is_subset, merge_patch, resource_of, resource_path
from mlendpoints.operator.scheduler import Scheduler

ROOT = Path(__file__).resolve().parents[3]


def test_subset_ignores_what_the_server_adds() -> None:
    want = {"spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"a": "b"}}}
    have = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "selector": {"a": "b"},
                     "clusterIP": "10.0.0.1"}, "status": {}}  # fmt: skip
    assert is_subset(want, have)


def test_subset_sees_hand_edits_and_removed_items() -> None:
    want = {"spec": {"replicas": 2, "containers": [{"name": "a"}, {"name": "b"}]}}
    assert not is_subset(want, {"spec": {"replicas": 3, "containers": [{"name": "a"}, {"name": "b"}]}})
    assert not is_subset(want, {"spec": {"replicas": 2, "containers": [{"name": "a"}]}})
    assert not is_subset(want, {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}})
    assert not is_subset({"a": True}, {"a": 1})


def test_subset_matches_empty_collections_and_canonical_quantities() -> None:
    assert is_subset({"nodeSelector": {}, "tolerations": [], "resources": {"limits": {}}}, {})
    assert is_subset(
        {"cpu": "0.5", "memory": "1024Mi", "gpu": 1}, {"cpu": "500m", "memory": "1Gi", "gpu": "1"}
    )
    assert not is_subset({"cpu": "1"}, {"cpu": "500m"})
    assert not is_subset({"image": "a"}, {"image": "b"})


def test_resource_paths() -> None:
    assert resource_path("v1", "ConfigMap", "ns", "x") == "/api/v1/namespaces/ns/configmaps/x"
    assert resource_path("policy/v1beta1", "PodDisruptionBudget", "ns") == (
        "/apis/policy/v1beta1/namespaces/ns/poddisruptionbudgets"
    )
    assert resource_path("mlendpoints.io/v1alpha1", "OnlineEndpoint", "ns", "e") == (
        "/apis/mlendpoints.io/v1alpha1/namespaces/ns/onlineendpoints/e"
    )


def test_scheduler_coalesces_triggers_and_retries_failures() -> None:
    async def scenario() -> list[str]:
        runs: list[str] = []
        gate = asyncio.Event()
        failed = False

        async def work(key: tuple[str, str, str]) -> None:
            nonlocal failed
            runs.append(key[2])
            if key[2] == "slow":
                await gate.wait()
            if key[2] == "flaky" and not failed:
                failed = True
                raise RuntimeError("transient")

        scheduler = Scheduler(work)
        key = ("OnlineEndpoint", "ns", "slow")
        scheduler.trigger(key)
        await asyncio.sleep(0)
        for _ in range(5):  # while running: one more run, not five
            scheduler.trigger(key)
        gate.set()
        scheduler.trigger(("OnlineEndpoint", "ns", "flaky"))
        await scheduler.idle()
        await asyncio.sleep(1.2)  # the retry after a failure comes after 1 s
        await scheduler.idle()
        return runs

    runs = asyncio.run(scenario())
    assert runs.count("slow") == 2
    assert runs.count("flaky") == 2


def test_scheduler_does_not_retry_in_a_namespace_being_deleted() -> None:
    async def scenario() -> int:
        runs = 0

        async def work(key: tuple[str, str, str]) -> None:
            nonlocal runs
            runs += 1
            raise NamespaceTerminating(403, "unable to create new content in namespace ns: being terminated")

        scheduler = Scheduler(work)
        scheduler.trigger(("OnlineEndpoint", "ns", "gone"))
        await scheduler.idle()
        await asyncio.sleep(1.2)  # a retry would come after 1 s
        await scheduler.idle()
        return runs

    assert asyncio.run(scenario()) == 1


def test_example_manifests_are_valid() -> None:
    docs = [
        d
        for p in sorted((ROOT / "examples/diabetes-online").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
    ]
    endpoints = [OnlineEndpoint.model_validate(d) for d in docs if d["kind"] == "OnlineEndpoint"]
    deployments = [OnlineDeployment.model_validate(d) for d in docs if d["kind"] == "OnlineDeployment"]
    assert len(endpoints) == 1 and len(deployments) >= 2
    names = {d.metadata["name"] for d in deployments}
    assert validate_endpoint(endpoints[0].spec, names) == []
    for dep in deployments:
        assert validate_deployment(dep.metadata["name"], dep.spec) == []


def test_merge_patch_deletes_what_is_gone_at_any_depth() -> None:
    current = {"traffic": {"blue": 80, "green": 20}, "phase": "x", "conditions": [{"a": 1}]}
    desired = {"traffic": {"blue": 100}, "conditions": [{"a": 2}], "new": 1}
    patch = merge_patch(current, desired)
    assert patch == {
        "traffic": {"green": None, "blue": 100},
        "phase": None,
        "conditions": [{"a": 2}],
        "new": 1,
    }
    assert merge_patch(desired, desired) == {}


def test_write_metric_label_names_the_resource_not_the_object() -> None:
    for api_version, kind, plural in [
        ("mlendpoints.io/v1alpha1", "OnlineEndpoint", "onlineendpoints"),
        ("v1", "ConfigMap", "configmaps"),
        ("apps/v1", "Deployment", "deployments"),
    ]:
        assert resource_of(resource_path(api_version, kind, "ns", "x") + "/status") == f"{plural}/status"
        assert resource_of(resource_path(api_version, kind, "ns", "x")) == plural
        assert resource_of(resource_path(api_version, kind, "ns")) == plural
    assert resource_of("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/a") == (
        "validatingwebhookconfigurations"
    )


def test_ensure_all_binds_after_the_rest() -> None:
    """A RoleBinding goes in a later wave than its Role (the API server refuses it before)."""
    from mlendpoints.operator.fake_kube import MemoryKube

    kube = MemoryKube()

    def obj(api_version: str, kind: str) -> dict[str, object]:
        return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "r", "namespace": "ml"}}

    binding = obj("rbac.authorization.k8s.io/v1", "RoleBinding")
    role = obj("rbac.authorization.k8s.io/v1", "Role")
    config = obj("v1", "ConfigMap")
    results = asyncio.run(kube.ensure_all([binding, role, config]))
    assert [ref.kind for _, ref in kube.writes] == ["Role", "ConfigMap", "RoleBinding"]
    assert [live["kind"] for live, _ in results] == ["Role", "ConfigMap", "RoleBinding"]
    assert all(wrote for _, wrote in results)
    assert not any(wrote for _, wrote in asyncio.run(kube.ensure_all([binding, role, config])))
