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
