"""Progress: a log line per mini-batch always; a progress bar too when stderr is a terminal."""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

log = logging.getLogger("mlendpoints.batch")


class Progress:
    def __init__(self, total: int, done: int, label: str) -> None:
        self.total, self.done = total, done
        self._bar: Any = None
        self._task: Any = None
        self._label = label
        self._streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=self.total, completed=self.done)
            # Log lines go above the bar: point handlers at rich's redirected stderr while it runs.
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler):
                    self._streams.append((handler, handler.setStream(sys.stderr)))
        return self

    def advance(self, fields: dict[str, Any]) -> None:
        self.done += 1
        summary = ", ".join(f"{k}={v}" for k, v in fields.items())
        log.info(
            f"mini-batch done ({self.done}/{self.total}): {summary}",
            extra={"fields": {**fields, "done": self.done, "total": self.total}},
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            for handler, stream in self._streams:
                handler.setStream(stream)
