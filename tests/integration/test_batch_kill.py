"""Exactly once under SIGKILL: kill the driver or one of its workers at random moments, resume, compare.

Real processes, real SIGKILL. The kill points are random (the seed is printed, so a
failure can be replayed with BATCH_KILL_SEED); each round ends with a run that is
left alone, and its output must be byte for byte the output of a run never killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.batch_support import DRIVER, flags, run_driver, write_csvs

ROUNDS = 4
KILLS_PER_ROUND = 3


def _workers(pid: int) -> list[int]:
    """The driver's worker processes: children of its multiprocessing fork server."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
    servers = {p for p, parent in parents.items() if parent == pid and b"forkserver" in cmdlines[p]}
    return [p for p, parent in parents.items() if parent in servers]


def _kill_at_random(args: list[str], rng: random.Random, within: float, log: list[str]) -> bool:
    """Start the driver, SIGKILL it or one of its workers after a random delay; True if it finished anyway."""
    proc = subprocess.Popen(
        [*DRIVER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        delay = rng.uniform(0.2, 0.9 * within)
        try:
            proc.wait(timeout=delay)
            log.append(f"finished before the kill at {delay:.2f}s (rc {proc.returncode})")
            return True
        except subprocess.TimeoutExpired:
            pass
        workers = _workers(proc.pid)
        if workers and rng.random() < 0.5:
            victim = rng.choice(workers)
            os.kill(victim, signal.SIGKILL)
            log.append(f"killed worker {victim} at {delay:.2f}s")
            proc.wait(timeout=120)  # the driver retries the mini-batch itself and finishes
            assert proc.returncode == 0, "a killed worker's mini-batch is retried"
            return True
        proc.kill()
        log.append(f"killed driver at {delay:.2f}s")
        proc.wait()
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_exactly_the_uninterrupted_output(
    diabetes_model: Path, tmp_path: Path
):
    seed = int(os.environ.get("BATCH_KILL_SEED", random.SystemRandom().randrange(2**32)))
    print(f"BATCH_KILL_SEED={seed}")
    rng = random.Random(seed)
    inp = tmp_path / "in"
    write_csvs(inp, 60, 5000)
    (inp / "zz-unsupported.bin").write_bytes(b"\0")
    extra = ["--mini-batch-size", "2", "--max-concurrency", "2"]
    started = time.monotonic()
    clean = run_driver(flags(diabetes_model, inp, tmp_path / "clean", *extra))
    duration = time.monotonic() - started
    assert clean.returncode == 0, clean.stderr
    expected = (tmp_path / "clean" / "predictions.csv").read_bytes()

    for round_ in range(ROUNDS):
        out = tmp_path / f"killed-{round_}"
        log: list[str] = []
        for _ in range(KILLS_PER_ROUND):
            if _kill_at_random(flags(diabetes_model, inp, out, *extra), rng, duration, log):
                break
        print(f"round {round_}: {log}")
        resumed = run_driver(flags(diabetes_model, inp, out, *extra))
        assert resumed.returncode == 0, f"seed {seed}, {log}: {resumed.stderr[-2000:]}"
        assert (out / "predictions.csv").read_bytes() == expected, f"seed {seed}, kills: {log}"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["items"] == {"total": 61, "succeeded": 60, "failed": 1}, f"seed {seed}, kills: {log}"
        assert len((out / "errors.jsonl").read_text().splitlines()) == 1
        assert not list((out / "_parts").glob(".tmp-*")), "leftovers of killed writers are cleaned up"
