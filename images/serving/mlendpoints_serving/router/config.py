"""File mode: the config file and keys file, re-read when they change.

Changes are found by polling each file's (inode, size, mtime) every POLL_SECONDS,
so a change takes effect well within a second; a changed file is read and parsed
in a worker thread. A file that fails to parse or validate is reported and the
previous good version stays in force.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import orjson
from pydantic import ValidationError

from mlendpoints_serving.contract import SECRET_PRIMARY_KEY, SECRET_SECONDARY_KEY, RouterConfig

POLL_SECONDS = 0.2
log = logging.getLogger("mlendpoints.router")

Keys = tuple[str | None, str | None]
T = TypeVar("T")


class ConfigError(Exception):
    pass


def parse_config(raw: bytes | str, source: str) -> RouterConfig:
    try:
        return RouterConfig.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: invalid router config: {problems}") from exc


def load_config_file(path: Path) -> RouterConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    return parse_config(raw, str(path))


def load_keys_file(path: Path) -> Keys:
    """A JSON file {primaryKey, secondaryKey}, or a directory with files of those names (a mounted Secret)."""
    try:
        if path.is_dir():
            found = [path / SECRET_PRIMARY_KEY, path / SECRET_SECONDARY_KEY]
            primary, secondary = (p.read_text().strip() if p.exists() else None for p in found)
            return primary, secondary
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"keys file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"keys file {path}: expected a JSON object with {SECRET_PRIMARY_KEY}, {SECRET_SECONDARY_KEY}"
        )
    return data.get(SECRET_PRIMARY_KEY), data.get(SECRET_SECONDARY_KEY)


def keys_from_secret_data(data: Mapping[str, str] | None) -> Keys:
    """Secret `.data` values are base64."""
    data = data or {}

    def decode(key: str) -> str | None:
        value = data.get(key)
        return base64.b64decode(value).decode().strip() if value else None

    return decode(SECRET_PRIMARY_KEY), decode(SECRET_SECONDARY_KEY)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or its Secret-volume symlink is swapped."""
    try:
        targets = [path] if not path.is_dir() else [path / SECRET_PRIMARY_KEY, path / SECRET_SECONDARY_KEY]
        stats = [os.stat(t) for t in targets if t.exists()]
    except OSError:
        return None
    return (
        sum(s.st_ino for s in stats),
        sum(s.st_size for s in stats),
        max((s.st_mtime_ns for s in stats), default=0),
    )


async def watch_file(
    path: Path, load: Callable[[Path], T], apply: Callable[[T], None], stop: asyncio.Event
) -> None:
    """Each time the file changes, `load` it (in a worker thread) and `apply` the result on the event loop.

    The poll itself stats the file on the loop: a stat of a local file (a path, a ConfigMap or Secret
    volume) takes microseconds, where a thread hop five times a second would cost more and its GIL
    hand-offs would show in the requests' tail latency.
    """
    last = _signature(path)
    while not stop.is_set():
        await asyncio.sleep(POLL_SECONDS)
        current = _signature(path)
        if current is None or current == last:
            continue
        last = current
        try:
            value = await asyncio.to_thread(load, path)
        except ConfigError as exc:
            log.error("keeping the previous version: %s", exc)
            continue
        apply(value)
