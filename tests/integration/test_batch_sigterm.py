"""SIGTERM (a deleted or evicted pod) stops `mlendpoints-batch` and its workers at once.

In a pod the driver is PID 1, which ignores signals it has no handler for: without its
handler a deleted BatchJob's pods would linger for the whole grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DRIVER = str(Path(sys.executable).parent / "mlendpoints-batch")
SLOW_SCRIPT = """\
import time


def init():
    pass


def run(mini_batch):
    time.sleep(3600)
    return list(mini_batch)
"""


def descendants(pid: int) -> set[int]:
    """Every process under `pid`, from /proc (field 4 of /proc/PID/stat is the parent)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_sigterm_stops_the_driver_and_its_workers_promptly(iris_model: Path, tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    for i in range(4):
        (tmp_path / "input" / f"{i}.csv").write_text("a\n1\n")
    (tmp_path / "slow.py").write_text(SLOW_SCRIPT)
    proc = subprocess.Popen(
        [DRIVER, "--model-dir", str(iris_model), "--input", str(tmp_path / "input"),
         "--output", str(tmp_path / "out"), "--scoring-script", str(tmp_path / "slow.py"),
         "--mini-batch-size", "1", "--max-concurrency", "2", "--retry-timeout", "3600"],
        env={**os.environ, "MLENDPOINTS_TERMINATION_LOG": str(tmp_path / "termination-log")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(descendants(proc.pid)) < 3 and time.monotonic() < deadline:  # fork server + 2 workers
            time.sleep(0.2)
        time.sleep(2.0)  # the workers are inside run() by now
        workers = descendants(proc.pid)
        assert len(workers) >= 3, "the driver did not start its workers"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + signal.SIGTERM
    assert took < 5, f"took {took:.1f}s"
    deadline = time.monotonic() + 5
    while running(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running(workers) == set(), "workers left running"
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
