"""`mlendpoints package`: a self-contained image build context for clusters with no egress.

The context holds the model (fetched by `mlendpoints-fetch`, the init container's own code),
a wheelhouse of the model's requirements, and a Dockerfile FROM the serving image that
installs them offline. A deployment then uses `image: <what you built>` and
`model: /opt/mlendpoints/model`: the fetch init container copies it from the image, so
nothing is downloaded in the cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from mlendpoints.errors import UserError
from mlendpoints.local.progress import directory_bytes
from mlendpoints.operator.settings import PUBLIC_SERVING_IMAGE

console = Console(stderr=True)
IMAGE_MODEL_DIR = "/opt/mlendpoints/model"
IMAGE_WHEELHOUSE = "/opt/mlendpoints/wheelhouse"
POD_USER = 1000  # the rendered pods' runAsUser

DOCKERFILE = """\
# Built by `mlendpoints package`: the serving image plus one model and its requirements, installed
# offline from the wheelhouse (no network needed at build time or in the cluster).
ARG SERVING_IMAGE={image}
FROM ${{SERVING_IMAGE}}
USER root
COPY wheelhouse/ {wheelhouse}/
COPY model/ {model}/
RUN {install}
# `--env-manager virtualenv` builds from the same wheelhouse, offline.
ENV PIP_NO_INDEX=1 PIP_FIND_LINKS={wheelhouse}
USER {user}
"""


def _run_watching(argv: list[str], watch: Path, label: str, log: Path) -> None:
    """Run a step, showing how many bytes it has written so far; fail with the step's last output line."""
    with open(log, "wb") as out, console.status(label) as status:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            status.update(f"{label} ({directory_bytes(watch) / 1e6:.1f} MB)")
            time.sleep(0.2)
    if proc.returncode != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        raise UserError(f"{label} failed: {lines[-1] if lines else 'no output'}", f"full log: {log}")


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@click.command()
@click.option(
    "--model-uri",
    "-m",
    required=True,
    help="Any URI mlendpoints-fetch takes (models:/, runs:/, s3://, path).",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory to write the context to.",
)
@click.option(
    "--base-image", default=PUBLIC_SERVING_IMAGE, show_default=True, help="The serving image to build FROM."
)
@click.option(
    "--python-version", help="Wheels for this Python (e.g. 3.11) when the image's differs from this one."
)
@click.option(
    "--platform", "platforms", multiple=True, help="Wheel platform tag(s), e.g. manylinux2014_x86_64."
)
@click.option("--pip-arg", "pip_args", multiple=True, help="Extra `pip download` argument (repeatable).")
@click.option("--force", is_flag=True, help="Overwrite a non-empty output directory.")
def package(
    model_uri: str,
    output: Path,
    base_image: str,
    python_version: str | None,
    platforms: tuple[str, ...],
    pip_args: tuple[str, ...],
    force: bool,
) -> None:
    """Write an image build context (Dockerfile, model, wheelhouse) for clusters with no egress.

    \b
    Example:
      mlendpoints package --model-uri models:/diabetes/2 --output build/diabetes-2
      docker build -t registry.local/diabetes:2 build/diabetes-2
    """
    if output.exists() and any(output.iterdir()):
        if not force:
            raise UserError(f"{output} is not empty", "choose another --output, or pass --force to overwrite")
        shutil.rmtree(output)
    model_dir, wheelhouse = output / "model", output / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    logs = output / ".logs"
    logs.mkdir()
    _run_watching(
        [_tool("mlendpoints-fetch"), "--model-uri", model_uri, "--dest", str(model_dir)],
        model_dir,
        f"fetching {model_uri}",
        logs / "fetch.log",
    )
    requirements = model_dir / "requirements.txt"
    if requirements.is_file():
        argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-d", str(wheelhouse)]
        argv += ["-r", str(requirements)]
        if python_version or platforms:
            argv += ["--only-binary=:all:"]
            argv += ["--python-version", python_version] if python_version else []
            argv += [a for p in platforms for a in ("--platform", p)]
        argv += list(pip_args)
        _run_watching(argv, wheelhouse, "downloading the model's requirements", logs / "pip.log")
        install = (
            f"python -m pip install --no-cache-dir --no-index --find-links {IMAGE_WHEELHOUSE}"
            f" -r {IMAGE_MODEL_DIR}/requirements.txt"
        )
    else:
        console.print(f"[yellow]{model_uri} has no requirements.txt; the wheelhouse stays empty[/]")
        install = "true"
    (output / "Dockerfile").write_text(
        DOCKERFILE.format(
            image=base_image,
            wheelhouse=IMAGE_WHEELHOUSE,
            model=IMAGE_MODEL_DIR,
            install=install,
            user=POD_USER,
        )
    )
    (output / ".dockerignore").write_text(".logs\n")
    wheels = len(list(wheelhouse.iterdir()))
    size = directory_bytes(output) / 1e6
    click.echo(f"wrote {output}: Dockerfile, model/, wheelhouse/ ({wheels} files), {size:.1f} MB in all")
    click.echo(f"next:  docker build -t REGISTRY/IMAGE:TAG {output}")
    click.echo(f"then in the OnlineDeployment:  image: REGISTRY/IMAGE:TAG  and  model: {IMAGE_MODEL_DIR}")
