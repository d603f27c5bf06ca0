"""Writes the values table of charts/mlendpoints/README.md from values.yaml's `# --` comments.

`python scripts/chart_readme.py` rewrites the table between the README's `<!-- values -->` markers;
`--check` only says whether it is current (exit 1 when not; a unit test runs it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "mlendpoints"
BEGIN, END = "<!-- values -->", "<!-- /values -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):")


def documented(values_text: str) -> list[tuple[str, str]]:
    """(dotted path, description) of every key whose line follows a `# --` comment, in file order."""
    rows: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        match = KEY.match(line)
        if match is None:
            if not stripped.startswith("#"):
                pending = []
            continue
        indent = len(match["indent"])
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, match["key"])]
        if pending:
            rows.append((".".join(k for _, k in stack), " ".join(pending)))
            pending = []
    return rows


def table() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    lines = ["| Value | Default | Description |", "|---|---|---|"]
    for path, description in documented(text):
        default: Any = values
        for part in path.split("."):
            default = default[part]
        shown = json.dumps(default, separators=(", ", ": ")).replace("|", "\\|")
        lines.append(f"| `{path}` | `{shown}` | {description} |")
    return "\n".join(lines)


def render(readme: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    path = CHART / "README.md"
    current = path.read_text()
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print(f"{path} is stale: run python scripts/chart_readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
