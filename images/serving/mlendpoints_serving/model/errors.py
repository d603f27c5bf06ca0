"""Errors of the scoring core; transports map them to status codes."""

from __future__ import annotations


class InputError(ValueError):
    """Client input does not fit the model (a 400): the message names the field and what was expected."""

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ModelError(RuntimeError):
    """The model itself raised (a 500): carries the original exception's type and message."""

    def __init__(self, exc: BaseException) -> None:
        self.type = type(exc).__name__
        self.message = str(exc)
        super().__init__(f"{self.type}: {self.message}")


class DeviceOutOfMemory(ModelError):
    """The accelerator ran out of memory on this input (CUDA out of memory): this request fails (a 507),
    the worker goes on. A ModelError, so that a batch that ran out is retried one input at a time."""


class DeviceLost(RuntimeError):
    """The accelerator's context is poisoned (a sticky CUDA error: every later call would fail too).

    Not a ModelError: no retry can succeed in this process. The transport answers and the worker
    exits with the reason in the termination log, so that the pod restarts with a fresh context.
    """

    def __init__(self, exc: BaseException, device: str) -> None:
        self.type = type(exc).__name__
        self.message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.device = device
        super().__init__(f"{self.type} on {device}: {self.message}")
