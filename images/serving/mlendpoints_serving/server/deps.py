"""The model's dependencies: compare its requirements.txt with the installed packages, or build a venv."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

log = logging.getLogger("mlendpoints.serve")


def requirement_mismatches(model_dir: Path) -> list[str]:
    """Lines of the model's requirements.txt that the running environment does not satisfy."""
    from packaging.requirements import InvalidRequirement, Requirement

    path = model_dir / "requirements.txt"
    if not path.is_file():
        return []
    problems = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            problems.append(f"{line}: not a requirement")
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = md.version(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{line}: not installed")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{line}: installed {installed}")
    return problems


def log_mismatches(model_dir: Path) -> None:
    problems = requirement_mismatches(model_dir)
    if problems:
        log.warning(
            "model requirements differ from the installed packages",
            extra={"fields": {"mismatches": problems}},
        )


def virtualenv_python(model_dir: Path, cache_dir: Path) -> Path:
    """A venv with the model's requirements, cached under a hash of them; returns its python.

    The venv sees this server's own packages through a .pth file placed after its
    site-packages, so the model's pins win and the server still imports. pip honours
    PIP_FIND_LINKS / PIP_NO_INDEX from the environment for offline wheelhouses.
    """
    reqs = model_dir / "requirements.txt"
    content = reqs.read_bytes() if reqs.is_file() else b""
    key = hashlib.sha256(content + sys.version.encode()).hexdigest()[:16]
    env = cache_dir / key
    python = env / "bin" / "python"
    if (env / ".complete").is_file():
        log.info("reusing model environment", extra={"fields": {"path": str(env)}})
        return python
    log.info("building model environment", extra={"fields": {"path": str(env)}})
    env.parent.mkdir(parents=True, exist_ok=True)
    # The venv brings its own pip (ensurepip, offline): the serving image has none of its own.
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    if content.strip():
        subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(reqs)],
            check=True,
            env=os.environ.copy(),
        )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # An `import` line runs at start-up; addsitedir also reads the server's .pth files (editable installs).
    own = sysconfig.get_paths()["purelib"]
    Path(site, "zz_mlendpoints_server.pth").write_text(f"import site; site.addsitedir({own!r})\n")
    (env / ".complete").write_text(key)
    return python
