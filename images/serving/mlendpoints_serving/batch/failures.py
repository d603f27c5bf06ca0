"""How a batch job fails: `JobFailed` carries one of the contract's `BatchFailure` reasons.

The driver's entry point turns it into the one failure line the operator and the CLI parse
(`contract.format_failure` / `parse_failure`); nothing else spells a reason.
"""

from __future__ import annotations

from mlendpoints_serving.contract import BatchFailure


class JobFailed(Exception):
    def __init__(self, reason: BatchFailure, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


def threshold_exceeded(failed: int, threshold: int) -> JobFailed | None:
    """The failure to raise when `failed` items are over the error threshold (-1: no threshold)."""
    if 0 <= threshold < failed:
        return JobFailed(
            BatchFailure.ErrorThresholdExceeded,
            f"{failed} items failed, more than the error threshold {threshold}",
        )
    return None
