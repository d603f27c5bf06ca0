"""The termination log: what Kubernetes shows as a container's last message."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mlendpoints_serving import runtime
from mlendpoints_serving.contract import ENV_TERMINATION_LOG


def test_a_message_replaces_a_longer_one_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv(ENV_TERMINATION_LOG, str(log))
    runtime.write_termination_message("mlendpoints-serve failed: the first, much longer reason")
    runtime.write_termination_message("second")
    assert log.read_text() == "second"
    runtime.write_termination_message("x" * 5000)
    assert log.read_text() == "x" * 4000  # Kubernetes reads at most 4096 bytes


def test_a_writer_killed_before_its_write_leaves_the_earlier_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second worker SIGTERMed by the supervisor while it reports the same failure: the first
    worker's message stays (a truncating open left an empty log)."""
    log = tmp_path / "termination-log"
    log.write_text("mlendpoints-serve failed: the model did not load")
    pid = os.fork()
    if pid == 0:  # the second worker: killed after its open, before its write
        os.environ[ENV_TERMINATION_LOG] = str(log)
        real_open = os.open

        def open_then_die(path: str, flags: int, mode: int = 0o777) -> int:
            fd = real_open(path, flags, mode)
            os.kill(os.getpid(), signal.SIGKILL)
            return fd

        os.open = open_then_die  # type: ignore[assignment]
        runtime.write_termination_message("mlendpoints-serve failed: the model did not load")
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert log.read_text() == "mlendpoints-serve failed: the model did not load"
