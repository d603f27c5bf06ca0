"""Device choice and device failures for flavors that take a device (PyTorch), with the real torch.

No GPU here: `auto` falls back to the CPU (torch is installed, CUDA is not visible), and the failures
are torch's own exception types raised on the CPU. The CUDA branch itself runs in bench/gpu_check.sh.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlendpoints_serving.model import DeviceLost, DeviceOutOfMemory, ModelError
from mlendpoints_serving.model.core import _device_config
from mlendpoints_serving.model.device import choose, failure

torch = pytest.importorskip("torch", reason="torch is in the [test] extra; without it: pip install .[torch]")

SKLEARN: dict[str, Any] = {"flavors": {"python_function": {}, "sklearn": {}}}
PYTORCH: dict[str, Any] = {"flavors": {"python_function": {}, "pytorch": {}}}
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: auto picks it")


def test_only_pytorch_models_get_a_device() -> None:
    assert _device_config(SKLEARN, "auto") is None
    assert _device_config(SKLEARN, "cuda") is None


@NO_GPU
def test_auto_falls_back_to_the_cpu_with_torch_installed_and_no_gpu() -> None:
    assert _device_config(PYTORCH, "auto") == {"device": "cpu"}
    assert _device_config(PYTORCH, "auto", worker=3) == {"device": "cpu"}
    assert _device_config(PYTORCH, "cpu") == {"device": "cpu"}


@NO_GPU
@pytest.mark.parametrize("asked", ["cuda", "cuda:1"])
def test_cuda_without_a_visible_gpu_fails_naming_why(asked: str) -> None:
    with pytest.raises(RuntimeError, match=rf"--device {asked}: no CUDA device is visible"):
        choose(asked)


def test_a_cuda_out_of_memory_error_is_the_request_s_alone() -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 139 GiB total)")
    err = failure(oom, "cpu")
    assert isinstance(err, DeviceOutOfMemory) and isinstance(err, ModelError)  # batches retry one by one
    assert err.type == "OutOfMemoryError" and "Tried to allocate 20.00 GiB" in err.message
    # Wrapped by a model's own code, and in the words of older torch versions: still out of memory.
    try:
        try:
            raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported later")
        except RuntimeError as inner:
            raise ValueError("forward failed") from inner
    except ValueError as wrapped:
        assert isinstance(failure(wrapped, None), DeviceOutOfMemory)


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: an illegal memory access was encountered\nCompile with `TORCH_USE_CUDA_DSA`",
        "CUDA error: device-side assert triggered",
        "CUDA error: unspecified launch failure",
    ],
)
def test_a_sticky_cuda_error_means_the_device_is_lost(message: str) -> None:
    err = failure(torch.AcceleratorError(message), "cuda:0")
    assert isinstance(err, DeviceLost) and not isinstance(err, ModelError)
    assert err.device == "cuda:0" and err.type == "AcceleratorError"
    assert err.message == message.splitlines()[0]


def test_other_errors_stay_the_model_s() -> None:
    err = failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x3 and 13x64)"), "cpu")
    assert type(err) is ModelError and err.type == "RuntimeError"
    # A non-sticky CUDA error on a model that is not on a GPU: nothing to probe, the model's error.
    assert type(failure(RuntimeError("CUDA error: invalid argument"), "cpu")) is ModelError
