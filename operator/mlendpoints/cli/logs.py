"""Printing and following several log files at once, each line prefixed with its source."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from rich.console import Console
from rich.text import Text

_COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")


def follow_files(files: dict[str, Path], tail: int, follow: bool, console: Console) -> None:
    """Print the last `tail` lines of each file; with `follow`, keep printing new lines until Ctrl-C."""
    offsets: dict[str, int] = {}
    styles = {label: _COLORS[i % len(_COLORS)] for i, label in enumerate(files)}

    def emit(label: str, line: str) -> None:
        console.print(Text.assemble((f"[{label}] ", styles[label]), line.rstrip("\n")), soft_wrap=True)

    for label, path in files.items():
        try:
            with open(path, errors="replace") as fh:
                for line in deque(fh, maxlen=tail):
                    emit(label, line)
                offsets[label] = fh.tell()
        except FileNotFoundError:
            offsets[label] = 0
    if not follow:
        return
    try:
        while True:
            for label, path in files.items():
                try:
                    with open(path, errors="replace") as fh:
                        fh.seek(offsets[label])
                        for line in fh:
                            emit(label, line)
                        offsets[label] = fh.tell()
                except FileNotFoundError:
                    continue
            time.sleep(0.3)
    except KeyboardInterrupt:
        return
