"""The `mlendpoints` command line: local endpoints, cluster commands, packaging.

`main` is the console-script entry point; the command tree lives in `app`.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from mlendpoints.cli.app import run

    return run(argv)
