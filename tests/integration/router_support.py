"""Shared by the router tests: real backend processes, the router's command line, waiting for a change."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.servers import free_port, running

REPO = Path(__file__).resolve().parents[2]
ROUTER = [sys.executable, "-m", "mlendpoints_serving.router.cli"]


class Backends:
    """Starts `tests.integration.router_backend` processes; each returns 'host:port'."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path) -> None:
        self._stack, self._tmp = stack, tmp

    def start(self, name: str, delay: float = 0.0, host: str = "127.0.0.1") -> str:
        port = free_port()
        argv = [sys.executable, "-m", "tests.integration.router_backend", name, str(port), str(delay), host]
        log = self._tmp / f"{name}.log"
        self._stack.enter_context(running(argv, ready_url=f"http://{host}:{port}/__count", cwd=REPO, log=log))
        return f"{host}:{port}"


def until(condition: Callable[[], bool], within: float) -> float:
    """Seconds until `condition()` held; fails if it did not within `within` seconds."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within, f"condition not met within {within}s"
        time.sleep(0.02)
    return time.monotonic() - start
