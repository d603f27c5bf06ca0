"""Key checks, config and keys parsing, and turning Kubernetes objects into router inputs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from mlendpoints_serving.router.auth import KeyChecker
from mlendpoints_serving.router.config import (
    ConfigError,
    keys_from_secret_data,
    load_config_file,
    load_keys_file,
    parse_config,
)
from mlendpoints_serving.router.watch import config_from_configmaps, keys_from_secrets, slices_by_service


def test_bearer_primary_or_secondary_key_passes() -> None:
    keys = KeyChecker()
    keys.set_keys("primary-key", "secondary-key")
    assert keys.check(b"Bearer primary-key")
    assert keys.check(b"bearer secondary-key")
    for bad in (
        None,
        b"",
        b"Bearer",
        b"Bearer wrong",
        b"Basic primary-key",
        b"primary-key",
        b"Bearer primary-ke",
    ):
        assert not keys.check(bad), bad


def test_no_keys_loaded_lets_nothing_through() -> None:
    keys = KeyChecker()
    assert not keys.loaded
    assert not keys.check(b"Bearer ")
    keys.set_keys(None, "")
    assert not keys.check(b"Bearer ")


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"deployments\.blue\.requestTimeoutMs"):
        parse_config(b'{"endpoint": "e", "deployments": {"blue": {"requestTimeoutMs": 0}}}', "cfg")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config(b"{", "cfg")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.json")


def test_keys_from_json_file_or_secret_volume_directory(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    file.write_text('{"primaryKey": "p", "secondaryKey": "s"}')
    assert load_keys_file(file) == ("p", "s")
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "primaryKey").write_text("p2\n")
    assert load_keys_file(volume) == ("p2", None)
    file.write_text("[1]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_keys_file(file)


def test_keys_from_secret_data_are_base64_decoded() -> None:
    data = {"primaryKey": base64.b64encode(b"p").decode(), "secondaryKey": base64.b64encode(b"s").decode()}
    assert keys_from_secret_data(data) == ("p", "s")
    assert keys_from_secret_data(None) == (None, None)
    assert keys_from_secrets([{"metadata": {"name": "other"}, "data": data}], "e-keys") == (None, None)
    assert keys_from_secrets([{"metadata": {"name": "e-keys"}, "data": data}], "e-keys") == ("p", "s")


def test_config_from_configmap() -> None:
    raw = '{"endpoint": "e", "deployments": {"a": {"service": "e-a"}}, "traffic": {"a": 100}}'
    items = [{"metadata": {"name": "e-router"}, "data": {"router.json": raw}}]
    config = config_from_configmaps(items, "e-router")
    assert config is not None and config.traffic == {"a": 100}
    assert config_from_configmaps([], "e-router") is None
    with pytest.raises(ConfigError, match=r"no key 'router\.json'"):
        config_from_configmaps([{"metadata": {"name": "e-router"}, "data": {}}], "e-router")


def test_slices_grouped_by_service_label() -> None:
    items: list[dict[str, Any]] = [
        {"metadata": {"name": "s1", "labels": {"kubernetes.io/service-name": "e-a"}}},
        {"metadata": {"name": "s2", "labels": {"kubernetes.io/service-name": "e-a"}}},
        {"metadata": {"name": "s3", "labels": {"kubernetes.io/service-name": "e-b"}}},
        {"metadata": {"name": "s4"}},
    ]
    grouped = slices_by_service(items)
    assert {k: [s["metadata"]["name"] for s in v] for k, v in grouped.items()} == {
        "e-a": ["s1", "s2"],
        "e-b": ["s3"],
    }
