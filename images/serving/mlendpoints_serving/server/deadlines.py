"""Request timeouts at the cost of a set insertion: one timer for all requests, not one per request.

`asyncio.timeout()` arms a loop timer per request (under uvloop a libuv timer) and cancels
it after: ~8 us a request, a tenth of a small request's whole cost. Every request here has
the same timeout, so requests are grouped by the sweep period they start in: one set of
tasks per period. A request adds its task to the open period's set and takes it out when
it ends. Every `resolution_s`, while requests are in flight, the open period closes, and
the tasks still in a period that closed a whole timeout ago are cancelled: a request is
cancelled no sooner than its deadline and at most `2 * resolution_s` after it.

In `bench/request_path.py` a per-request record (an object, a deque entry swept one by one)
cost ~2.2 us a request; a set's add and discard, ~0.5 us.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, TypeAlias

Task: TypeAlias = "asyncio.Task[Any]"
# What `start` gives a request: its task and the set of its period (to take the task out of).
Token: TypeAlias = tuple[Task, set[Task]]


class Deadlines:
    def __init__(self, timeout_s: float, resolution_s: float = 0.01) -> None:
        self.timeout_s = timeout_s
        self.resolution_s = min(resolution_s, timeout_s)
        self._open: set[Task] = set()  # tasks of requests started since the last sweep
        self._closed: collections.deque[tuple[float, set[Task]]] = collections.deque()  # (closed at, left)
        self._expired: set[Task] = set()  # cancelled by a deadline, until their request ends
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> Token:
        """The deadline of the current task's request, from now; pass it to `end` when it finishes."""
        task = asyncio.current_task()
        assert task is not None
        period = self._open
        period.add(task)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.resolution_s, self._sweep)
        return task, period

    def expired(self, token: Token) -> bool:
        """Whether this request's deadline cancelled its task (not another cancel: a shutdown)."""
        return token[0] in self._expired

    def end(self, token: Token) -> None:
        task, period = token
        period.discard(task)
        if self._expired:
            self._expired.discard(task)

    def _sweep(self) -> None:
        now = time.monotonic()
        closed = self._closed
        if self._open:
            closed.append((now, self._open))
            self._open = set()
        # Periods whose requests have all ended go too, from the oldest, however young.
        while closed and (not closed[0][1] or closed[0][0] + self.timeout_s <= now):
            for task in closed.popleft()[1]:
                self._expired.add(task)
                task.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.resolution_s, self._sweep) if closed else None
