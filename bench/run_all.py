"""`make bench`: runs every benchmark under bench/ in turn (each writes its section of docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "bench.serving",
    "bench.request_path",
    "bench.router",
    "bench.batch",
    "bench.operator",
    "bench.autoscale",
    "bench.reliability",
]


def main() -> int:
    only = set(sys.argv[1:])
    failed = []
    for name in BENCHMARKS:
        if only and name.split(".")[-1] not in only:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            print(f"bench: {name} not available: {exc}")
            failed.append(name)
            continue
        print(f"bench: running {name}", flush=True)
        if module.main() != 0:
            failed.append(name)
    if failed:
        print("bench: failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
