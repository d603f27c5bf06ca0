"""`mlendpoints-batch`: score files with an MLflow model (or a scoring script), exactly once, resumably.

Flags are documented in docs/contract.md (batch section) and by `--help`.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import NoReturn

from pydantic import ValidationError
from pydantic_settings import CliApp

from mlendpoints_serving.batch.failures import JobFailed
from mlendpoints_serving.batch.job import run
from mlendpoints_serving.batch.settings import BatchSettings
from mlendpoints_serving.contract import BATCH_DRIVER, BatchFailure, format_failure
from mlendpoints_serving.runtime import fatal_line, setup_logging, write_termination_message


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    """In a pod the driver is PID 1, which the kernel spares signals it has no handler for: without
    this, deleting the pod would wait out its grace period. Exit through the coordinator's cleanup
    (its workers stopped); committed mini-batches stay, a rerun resumes."""
    raise SystemExit(128 + signum)


def _fail(reason: BatchFailure, message: str, code: int = 1) -> NoReturn:
    """The one failure line (`contract.format_failure`), which the operator and the CLI parse back."""
    fatal_line(format_failure(reason, message), BATCH_DRIVER, code)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = CliApp.run(BatchSettings, cli_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        _fail(BatchFailure.InvalidSettings, problems, code=2)
    setup_logging(settings.logging_level)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        status = run(settings)
    except JobFailed as exc:
        _fail(exc.reason, exc.message)
    except FileNotFoundError as exc:
        _fail(BatchFailure.InputNotFound, str(exc))
    # The operator reads the outcome from the pod's termination message, not from the output.
    write_termination_message(status.model_dump_json(exclude_none=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
