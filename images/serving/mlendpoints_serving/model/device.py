"""Devices, for the flavors that take one (PyTorch): where a worker loads its model, and what a failure
on the device means.

`choose()`: `auto` is the GPU when CUDA is visible (torch.cuda.is_available()), else the CPU; `cuda`
insists on the GPU (loading fails, naming why, when none is visible). With several GPUs, worker `i` of
a server takes GPU `i mod count`, so that one worker per GPU (what a GPU deployment runs by default)
spreads over them. torch is imported only for PyTorch models, and only in the worker (never in the
parent that forks the workers: CUDA does not survive a fork).

`failure()`: what an exception the model raised means. A CUDA out-of-memory error fails that request
only (DeviceOutOfMemory, a 507; the cached blocks go back to the driver). A CUDA error that leaves the
context unusable (an illegal memory access, a device-side assert...: CUDA's "sticky" errors, after
which every call fails until the process exits) is DeviceLost: the worker exits with the reason in
the termination log, and the pod restarts. Any other CUDA error is checked with a small operation on
the device: if that fails too, the context is lost; else the error is the model's (a 500).
"""

from __future__ import annotations

import logging
from typing import Any

from mlendpoints_serving.model.errors import DeviceLost, DeviceOutOfMemory, ModelError

log = logging.getLogger("mlendpoints.model")

TORCH_FLAVOR = "pytorch"
CPU = "cpu"

# CUDA's errors after which the context is unusable (cudaErrorIllegalAddress, cudaErrorAssert,
# cudaErrorLaunchFailure, cudaErrorHardwareStackError, cudaErrorIllegalInstruction,
# cudaErrorMisalignedAddress, cudaErrorInvalidAddressSpace, cudaErrorInvalidPc, cudaErrorLaunchTimeout,
# cudaErrorECCUncorrectable), in the words torch reports them with.
STICKY_CUDA_ERRORS = (
    "an illegal memory access was encountered",
    "device-side assert triggered",
    "unspecified launch failure",
    "hardware stack error",
    "an illegal instruction was encountered",
    "misaligned address",
    "operation not supported on global/shared address space",
    "invalid program counter",
    "the launch timed out and was terminated",
    "uncorrectable ECC error encountered",
)
OOM_MARKERS = ("CUDA out of memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


def takes_device(mlmodel: dict[str, Any]) -> bool:
    return TORCH_FLAVOR in mlmodel.get("flavors", {})


def choose(requested: str, worker: int = 0) -> str:
    """The torch device for worker `worker`: 'cpu' or 'cuda:N'. Raises RuntimeError for an impossible ask."""
    if requested == CPU:
        return CPU
    try:
        import torch
    except ImportError:
        if requested == "auto":
            return CPU
        raise RuntimeError(f"--device {requested}: torch is not installed in this image") from None
    if not torch.cuda.is_available():
        if requested == "auto":
            return CPU
        raise RuntimeError(
            f"--device {requested}: no CUDA device is visible (torch.cuda.is_available() is false; "
            "does the pod have an nvidia.com/gpu limit, and the node the NVIDIA device plugin?)"
        )
    count = torch.cuda.device_count()
    if requested.startswith("cuda:"):
        index = int(requested.split(":", 1)[1])
        if index >= count:
            raise RuntimeError(f"--device {requested}: only {count} CUDA device(s) visible")
        return requested
    return f"cuda:{worker % count}"


def pinned_to_cpu(exc: BaseException, config: dict[str, Any] | None) -> bool:
    """Whether loading on a GPU failed because the model is a torch.export program saved with its
    weights on the CPU (MLflow's default pt2 format cannot move across devices)."""
    device = (config or {}).get("device") or ""
    return device.startswith("cuda") and "torch.export" in str(exc) and "'cpu' device" in str(exc)


def describe(device: str) -> str:
    """The device's own name ('NVIDIA H200'), or 'cpu'."""
    if not device.startswith("cuda"):
        return CPU
    try:
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    except Exception:  # a name is nice to have; never a reason to fail
        return "cuda"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or any(m in str(exc) for m in OOM_MARKERS)


def _cuda_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "AcceleratorError" or "CUDA error" in str(exc)


def _usable(device: str) -> bool:
    """Whether the device still runs a small operation (a poisoned context fails every call)."""
    try:
        import torch

        torch.cuda.synchronize(device)
        return bool(torch.ones(1, device=device).add_(1).item() == 2.0)
    except Exception:
        return False


def release_cached_memory(device: str | None) -> None:
    if device is None or not device.startswith("cuda"):
        return
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:
        log.debug("emptying the CUDA cache failed", exc_info=True)


def failure(exc: BaseException, device: str | None) -> Exception:
    """What the model raising `exc` on `device` means: DeviceOutOfMemory, DeviceLost or ModelError."""
    chain = _chain(exc)
    if any(_out_of_memory(e) for e in chain):
        release_cached_memory(device)
        return DeviceOutOfMemory(exc)
    cuda = [e for e in chain if _cuda_error(e)]
    if cuda:
        text = " ".join(str(e) for e in cuda)
        sticky = any(s in text for s in STICKY_CUDA_ERRORS)
        on_gpu = device is not None and device.startswith("cuda")
        if sticky or (on_gpu and not _usable(device or "")):
            return DeviceLost(cuda[0], device or "cuda")
    return ModelError(exc)
