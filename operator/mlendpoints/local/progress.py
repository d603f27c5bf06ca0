"""Measures for progress reports of long steps on this machine (model downloads, wheel downloads)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def directory_bytes(path: Path) -> int:
    """Bytes of the files under `path` so far (0 when it does not exist yet)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total
