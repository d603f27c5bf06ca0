"""Process-level helpers every data-plane entry point shares: logging and fatal errors.

A fatal error is written as one line to the termination log (Kubernetes shows
it in the pod's status, and the operator copies it into the resource's
conditions) and the process exits non-zero.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import orjson

from mlendpoints_serving.contract import DEFAULT_TERMINATION_LOG, ENV_TERMINATION_LOG, failure_line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: easy to ship, easy to grep."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "info", json_logs: bool | None = None) -> None:
    """JSON lines when not on a terminal (pods), plain text on a terminal."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def write_termination_message(message: str) -> None:
    """Best effort: the termination log may not exist outside Kubernetes."""
    path = os.environ.get(ENV_TERMINATION_LOG, DEFAULT_TERMINATION_LOG)
    data = message[:4000].encode()
    # Written over what is there, then cut to length; not truncated at open: when one of several
    # workers fails, the supervisor SIGTERMs the others, and one killed between a truncating open
    # and its write left the log empty. Not a rename either: Kubernetes bind-mounts the file.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    except OSError:
        pass
    finally:
        os.close(fd)


def fatal(component: str, reason: str, code: int = 1) -> NoReturn:
    """Report a fatal error as '<component> failed: <reason>' and exit."""
    fatal_line(failure_line(component, reason), component, code)


def fatal_line(message: str, component: str, code: int = 1) -> NoReturn:
    """As fatal(), for a failure line already formatted (the batch driver's, `contract.format_failure`)."""
    _report_fatal(message, component)
    sys.exit(code)


def abort(component: str, reason: str, code: int = 1) -> NoReturn:
    """As fatal(), for a process that cannot wind down (a thread is stuck, and exiting normally would
    wait for it): report, then leave at once."""
    _report_fatal(failure_line(component, reason), component)
    logging.shutdown()
    os._exit(code)


def _report_fatal(message: str, component: str) -> None:
    logging.getLogger(component).error(message)
    print(message, file=sys.stderr, flush=True)
    write_termination_message(message)
