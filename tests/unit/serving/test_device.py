"""Device selection for flavors that take one (PyTorch). No GPU here: the CUDA branch itself is unverified."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from mlendpoints_serving.model.core import _device_config


def write_mlmodel(model_dir: Path, flavors: dict[str, object]) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "MLmodel").write_text(yaml.safe_dump({"flavors": flavors}))
    return model_dir


def test_only_pytorch_models_get_a_device(tmp_path: Path) -> None:
    sklearn = write_mlmodel(tmp_path / "sk", {"python_function": {}, "sklearn": {}})
    assert _device_config(sklearn, "auto") is None
    assert _device_config(sklearn, "cuda") is None


def test_an_explicit_device_is_passed_through(tmp_path: Path) -> None:
    torch_model = write_mlmodel(tmp_path / "pt", {"python_function": {}, "pytorch": {}})
    assert _device_config(torch_model, "cuda") == {"device": "cuda"}
    assert _device_config(torch_model, "cpu") == {"device": "cpu"}


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None, reason="torch is installed: auto may pick CUDA"
)
def test_auto_without_torch_means_cpu(tmp_path: Path) -> None:
    torch_model = write_mlmodel(tmp_path / "pt", {"python_function": {}, "pytorch": {}})
    assert _device_config(torch_model, "auto") == {"device": "cpu"}
