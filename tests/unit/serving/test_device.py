"""Device selection for flavors that take one (PyTorch). No GPU here: the CUDA branch itself is unverified."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from mlendpoints_serving.model.core import _device_config

SKLEARN: dict[str, Any] = {"flavors": {"python_function": {}, "sklearn": {}}}
PYTORCH: dict[str, Any] = {"flavors": {"python_function": {}, "pytorch": {}}}


def test_only_pytorch_models_get_a_device() -> None:
    assert _device_config(SKLEARN, "auto") is None
    assert _device_config(SKLEARN, "cuda") is None


def test_an_explicit_device_is_passed_through() -> None:
    assert _device_config(PYTORCH, "cuda") == {"device": "cuda"}
    assert _device_config(PYTORCH, "cpu") == {"device": "cpu"}


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None, reason="torch is installed: auto may pick CUDA"
)
def test_auto_without_torch_means_cpu() -> None:
    assert _device_config(PYTORCH, "auto") == {"device": "cpu"}
