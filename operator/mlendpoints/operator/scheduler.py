"""The scheduler both reconcilers (online and batch) run on: one reconcile per resource at a time.

Level-based: any event that concerns a resource only triggers it; triggers during a
run coalesce into one more run, failures retry with exponential backoff, and a
delayed trigger (a periodic refresh) keeps the earliest time asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from mlendpoints.operator import metrics
from mlendpoints.operator.kube import NamespaceTerminating

log = logging.getLogger("mlendpoints.operator")

Key = tuple[str, str, str]  # (kind, namespace, name)
MAX_BACKOFF_S = 60.0


class Scheduler:
    """Runs at most one reconcile per resource at a time; triggers during a run coalesce into one rerun."""

    def __init__(self, work: Callable[[Key], Awaitable[None]], concurrency: int = 32) -> None:
        self._work = work
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._slots = asyncio.Semaphore(concurrency)

    def trigger(self, key: Key, delay: float = 0.0) -> None:
        if delay > 0:
            timer = self._timers.get(key)
            when = asyncio.get_running_loop().time() + delay
            if timer is None or timer.when() > when:
                if timer is not None:
                    timer.cancel()
                self._timers[key] = asyncio.get_running_loop().call_at(when, self._fire, key)
            return
        if key in self._running:
            self._dirty.add(key)
            return
        self._running[key] = asyncio.create_task(self._run(key))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.trigger(key)

    async def _run(self, key: Key) -> None:
        try:
            while True:
                self._dirty.discard(key)
                async with self._slots:
                    await self._attempt(key)
                if key not in self._dirty:
                    return
        finally:
            del self._running[key]

    async def _attempt(self, key: Key) -> None:
        kind = key[0]
        metrics.RECONCILES.labels(kind).inc()
        started = time.perf_counter()
        try:
            await self._work(key)
            self._failures.pop(key, None)
        except NamespaceTerminating:
            # Its resources go with it; retrying would only fail (and write) again until they are gone.
            self._failures.pop(key, None)
            log.info("%s %s/%s: its namespace is being deleted; not reconciled", *key)
        except Exception:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
            metrics.ERRORS.labels(kind).inc()
            log.exception("reconcile of %s %s/%s failed; retrying in %.0fs", *key, delay)
            self.trigger(key, delay)
        finally:
            metrics.DURATION.labels(kind).observe(time.perf_counter() - started)

    async def idle(self) -> None:
        """Wait until no reconcile runs (tests and benchmarks)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
