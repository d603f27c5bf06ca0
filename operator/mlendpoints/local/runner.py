"""Runs planned pods as local processes: init containers to completion, then containers.

Processes start in their own session, so they outlive the command that
started them (`local up --detach`) and are stopped as a group (`local down`,
Ctrl-C). What is running is described by `Process` records, which the local
state file keeps between invocations.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mlendpoints.errors import UserError
from mlendpoints.local.mapping import ContainerPlan, PodPlan

INIT_TIMEOUT_S = 900.0
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Process:
    """A running container: enough to find it, probe it, stop it and show its log from any invocation."""

    pod: str
    container: str
    pid: int
    log: str
    termination_log: str
    ports: dict[int, int]
    readiness_url: str | None


class PodFailed(UserError):
    """A container of a pod exited or failed to become ready."""


def failure_reason(log: Path | str, termination_log: Path | str) -> str:
    """The termination message if written, else the last non-empty log line, as `kubectl describe` shows."""
    for path in (Path(termination_log), Path(log)):
        with contextlib.suppress(OSError):
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()[:500]
    return "no output"


def _popen(plan: ContainerPlan) -> subprocess.Popen[bytes]:
    plan.log.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        plan.termination_log.unlink()
    with open(plan.log, "ab") as log:
        return subprocess.Popen(
            plan.argv,
            env={**os.environ, **plan.env},
            cwd=plan.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_to_completion(
    plan: ContainerPlan, timeout: float = INIT_TIMEOUT_S, on_wait: Callable[[], None] | None = None
) -> None:
    """Run an init container; a non-zero exit fails the pod with the container's reason.

    `on_wait` is called about every 0.2 s while it runs (progress reports).
    """
    proc = _popen(plan)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    stop_group(proc.pid)
                    raise PodFailed(
                        f"pod {plan.pod}: init container {plan.name} did not finish within {timeout:.0f}s",
                        f"see its log: {plan.log}",
                    ) from None
                if on_wait is not None:
                    on_wait()
    except BaseException:
        stop_group(proc.pid)
        raise
    if code != 0:
        reason = failure_reason(plan.log, plan.termination_log)
        raise PodFailed(
            f"pod {plan.pod}: init container {plan.name} failed: {reason}",
            f"full log: {plan.log}",
        )


def start(plan: ContainerPlan) -> Process:
    proc = _popen(plan)
    return Process(
        pod=plan.pod,
        container=plan.name,
        pid=proc.pid,
        log=str(plan.log),
        termination_log=str(plan.termination_log),
        ports=plan.ports,
        readiness_url=plan.readiness_url,
    )


def start_pod(plan: PodPlan, on_wait: Callable[[], None] | None = None) -> list[Process]:
    """Init containers one by one to completion, then every container (not yet waited for)."""
    for init in plan.init_containers:
        run_to_completion(init, on_wait=on_wait)
    started: list[Process] = []
    try:
        for container in plan.containers:
            started.append(start(container))
    except BaseException:
        stop(started)
        raise
    return started


def alive(pid: int) -> bool:
    """True while the process runs; reaps it when it is our child so a zombie does not count as alive."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    """The readiness probe passes: an HTTP 2xx, or for `tcp://host:port` an accepted connection."""
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            return False
        return True
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def wait_ready(processes: Iterable[Process], timeout: float) -> None:
    """Wait until every process answers its readiness probe; fail at once, with its reason, if one exits."""
    pending = list(processes)
    deadline = time.monotonic() + timeout
    while pending:
        for proc in list(pending):
            if not alive(proc.pid):
                raise PodFailed(
                    f"pod {proc.pod}: container {proc.container} exited: "
                    f"{failure_reason(proc.log, proc.termination_log)}",
                    f"full log: {proc.log}",
                )
            if proc.readiness_url is None or _answers(proc.readiness_url):
                pending.remove(proc)
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"{p.pod}/{p.container}" for p in pending)
            raise PodFailed(f"not ready after {timeout:.0f}s: {names}", f"see the logs: {pending[0].log}")
        time.sleep(0.1)


def stop_group(pid: int, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        while alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)


def stop(processes: Iterable[Process], grace: float = STOP_GRACE_S) -> None:
    """Stop several processes at once: all get SIGTERM first, so the grace periods overlap."""
    procs = list(processes)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        stop_group(proc.pid, grace)
