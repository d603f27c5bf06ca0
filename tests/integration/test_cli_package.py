"""`mlendpoints package`: model, wheelhouse and Dockerfile; the image installs the wheels with no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "mlendpoints")
LOCAL_SERVING_IMAGE = "mlendpoints/serving:dev"  # what images/build.sh tags on this machine


def tiny_wheel(tmp_path: Path) -> Path:
    """A real wheel built offline, standing in for a model requirement (PyPI is not needed)."""
    src = tmp_path / "src"
    (src / "mle_tiny_dep").mkdir(parents=True)
    (src / "mle_tiny_dep" / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "mle-tiny-dep"\nversion = "0.1"\n'
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
         str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    return wheels


def test_package_writes_model_wheelhouse_and_dockerfile(tmp_path: Path, diabetes_model: Path) -> None:
    model = tmp_path / "model-src"
    shutil.copytree(diabetes_model, model)
    (model / "requirements.txt").write_text("mle-tiny-dep==0.1\n")
    wheels = tiny_wheel(tmp_path)
    out = tmp_path / "context"
    done = subprocess.run(
        [CLI, "package", "--model-uri", str(model), "--output", str(out), "--base-image", LOCAL_SERVING_IMAGE,
         "--pip-arg=--no-index", f"--pip-arg=--find-links={wheels}"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "model" / "MLmodel").is_file()
    assert [p.name for p in (out / "wheelhouse").iterdir()] == ["mle_tiny_dep-0.1-py3-none-any.whl"]
    dockerfile = (out / "Dockerfile").read_text()
    assert f"ARG SERVING_IMAGE={LOCAL_SERVING_IMAGE}" in dockerfile
    assert "pip install --no-cache-dir --no-index --find-links /opt/mlendpoints/wheelhouse" in dockerfile
    assert "docker build" in done.stdout

    # Again into the same directory: refused unless --force.
    again = subprocess.run([CLI, "package", "-m", str(model), "-o", str(out)], capture_output=True, text=True)
    assert again.returncode == 1 and "is not empty" in again.stderr

    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "image", "inspect", LOCAL_SERVING_IMAGE], capture_output=True).returncode
    ):
        pytest.skip(
            f"no docker daemon with {LOCAL_SERVING_IMAGE} here (make images builds it); "
            "the build context itself was checked"
        )
    tag = "mlendpoints-package-test:latest"
    build = subprocess.run(
        [docker, "build", "--network", "none", "-t", tag, str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    check = subprocess.run(
        [docker, "run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c",
         "import mle_tiny_dep, os; "
         "print(mle_tiny_dep.VALUE, os.path.exists('/opt/mlendpoints/model/MLmodel'))"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    subprocess.run([docker, "rmi", "-f", tag], capture_output=True, env=os.environ)
    assert check.stdout.split() == ["42", "True"], check.stderr


def test_a_model_that_cannot_be_fetched_is_reported(tmp_path: Path) -> None:
    done = subprocess.run(
        [CLI, "package", "-m", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("error: fetching") and "nothing-here" in done.stderr
    assert "Traceback" not in done.stderr
