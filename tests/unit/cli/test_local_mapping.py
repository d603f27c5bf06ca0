"""The pod-spec -> local-process mapping: volumes, mounts, ports, env, probes (pure, no processes)."""

from __future__ import annotations

import base64
import itertools
import sys
from pathlib import Path

import pytest

from mlendpoints.errors import UserError
from mlendpoints.local.mapping import PodObjects, plan_pod


def ports_from(start: int):
    counter = itertools.count(start)
    return lambda: next(counter)


def server_pod() -> dict:
    """Shaped like the operator's deployment pods: fetch into an emptyDir, then serve it."""
    return {
        "volumes": [
            {"name": "model", "emptyDir": {}},
            {
                "name": "code",
                "configMap": {"name": "score-code", "items": [{"key": "score.py", "path": "s/score.py"}]},
            },
            {"name": "keys", "secret": {"secretName": "ep-keys"}},
        ],
        "initContainers": [
            {
                "name": "fetch",
                "command": ["mlendpoints-fetch"],
                "args": ["--model-uri", "$(MODEL_URI)", "--dest", "/var/mlendpoints/model"],
                "env": [{"name": "MODEL_URI", "value": "models:/diabetes/2"}],
                "volumeMounts": [{"name": "model", "mountPath": "/var/mlendpoints/model"}],
            }
        ],
        "containers": [
            {
                "name": "server",
                "command": ["mlendpoints-serve"],
                "args": [
                    "--model-dir=/var/mlendpoints/model",
                    "--port",
                    "5001",
                    "--host",
                    "0.0.0.0",
                    "--scoring-script",
                    "/code/s/score.py",
                    "--workers",
                    "5001x",
                ],
                "ports": [{"name": "http", "containerPort": 5001}],
                "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "ep-keys", "key": "primaryKey"}}},
                    {"name": "METRICS_PORT", "value": "5001"},
                    {"name": "LITERAL", "value": "$$(POD)"},
                ],
                "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                "volumeMounts": [
                    {"name": "model", "mountPath": "/var/mlendpoints/model", "readOnly": True},
                    {"name": "code", "mountPath": "/code"},
                ],
            }
        ],
    }


OBJECTS = PodObjects.from_manifests(
    [
        {
            "kind": "ConfigMap",
            "metadata": {"name": "score-code"},
            "data": {"score.py": "def run(x): return x\n"},
        },
        {
            "kind": "Secret",
            "metadata": {"name": "ep-keys"},
            "data": {"primaryKey": base64.b64encode(b"p-key").decode()},
            "stringData": {"secondaryKey": "s-key"},
        },
    ]
)


def test_volumes_mounts_ports_env_and_probe_are_mapped(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "abc"
    plan = plan_pod(
        "blue-0",
        server_pod(),
        tmp_path / "pod",
        OBJECTS,
        namespace="ns",
        volume_overrides={"model": cache},
        allocate_port=ports_from(40000),
    )
    fetch, server = plan.init_containers[0], plan.containers[0]
    # $(VAR) expanded, mount path rewritten to the model cache the caller chose.
    assert fetch.argv[1:] == ["--model-uri", "models:/diabetes/2", "--dest", str(cache)]
    assert Path(fetch.argv[0]) == Path(sys.executable).parent / "mlendpoints-fetch"
    assert server.ports == {5001: 40000}
    assert server.argv[1:] == [
        f"--model-dir={cache}",
        "--port",
        "40000",
        "--host",
        "127.0.0.1",
        "--scoring-script",
        str(tmp_path / "pod" / "volumes" / "code" / "s" / "score.py"),
        "--workers",
        "5001x",
    ]
    # ConfigMap items land at their path; Secret data is decoded.
    assert (tmp_path / "pod" / "volumes" / "code" / "s" / "score.py").read_text().startswith("def run")
    assert (tmp_path / "pod" / "volumes" / "keys" / "primaryKey").read_text() == "p-key"
    assert (tmp_path / "pod" / "volumes" / "keys" / "secondaryKey").read_text() == "s-key"
    assert server.env["POD"] == "blue-0"
    assert server.env["KEY"] == "p-key"
    assert server.env["METRICS_PORT"] == "40000"
    assert server.env["LITERAL"] == "$(POD)"
    assert server.env["MLENDPOINTS_TERMINATION_LOG"] == str(tmp_path / "pod" / "server.termination-log")
    assert server.env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert server.readiness_url == "http://127.0.0.1:40000/health"


def test_unsupported_volume_is_refused_with_its_name(tmp_path: Path) -> None:
    spec = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}], "containers": []}
    with pytest.raises(UserError, match="volume 'data' of type persistentVolumeClaim"):
        plan_pod("p", spec, tmp_path, OBJECTS, allocate_port=ports_from(1))


def test_missing_secret_key_is_named(tmp_path: Path) -> None:
    spec = {
        "containers": [
            {
                "name": "c",
                "command": ["true"],
                "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}],
            }
        ]
    }
    with pytest.raises(UserError, match="env K needs nope/k"):
        plan_pod("p", spec, tmp_path, OBJECTS, allocate_port=ports_from(1))


def test_unknown_executable_says_what_to_install(tmp_path: Path) -> None:
    spec = {"containers": [{"name": "c", "command": ["no-such-binary-mlendpoints"]}]}
    with pytest.raises(UserError, match="'no-such-binary-mlendpoints' is not installed"):
        plan_pod("p", spec, tmp_path, OBJECTS, allocate_port=ports_from(1))
