"""`--upload-to`: a local model folder copied to object storage, where pods on a cluster can fetch it.

Azure uploads a `model: {path: ./folder}` to its workspace store when the deployment is created.
Here the import does it, through fsspec (credentials as `mlendpoints-fetch` reads them), into
`<destination>/<name>/<digest>/<folder>`: the digest is of the folder's content, so a path never
changes content under a running deployment, a changed model gets a new path (and a rollout), and
importing the same folder again uploads nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from mlendpoints.errors import UserError

UPLOAD_SCHEMES = ("s3", "gs", "abfss", "wasbs")
_MLMODEL = "MLmodel"  # copied last: when it is there, the whole folder is


def check_destination(destination: str) -> str:
    """`destination` without a trailing slash, or a UserError naming what is accepted."""
    if not re.fullmatch(rf"({'|'.join(UPLOAD_SCHEMES)})://[^/\s]+(/\S*)?", destination):
        raise UserError(
            f"--upload-to {destination!r}: not an object storage folder",
            "pass s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX",
        )
    return destination.rstrip("/")


def _files(folder: Path) -> list[Path]:
    """The folder's files (a file: itself), relative, in a fixed order with MLmodel last."""
    if folder.is_file():
        return [Path(".")]
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted(files, key=lambda p: p.as_posix() == _MLMODEL)


def content_digest(folder: Path) -> str:
    """A short digest of the folder's file names and bytes."""
    digest = hashlib.sha256()
    for relative in _files(folder):
        digest.update(relative.as_posix().encode() + b"\0")
        with open(folder / relative, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _filesystem(uri: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise UserError(
            "--upload-to needs fsspec and the store's library (s3fs, gcsfs, adlfs)",
            "pip install 'mlendpoints[serving]'",
        ) from None
    scheme, _, rest = uri.partition("://")
    # A filesystem of its own: fsspec caches instances per process by their arguments, and a cached
    # one keeps the credentials and endpoint of the environment it was made in (a later caller in
    # the same process, with other ones, would get this one: seen in the test session).
    options: dict[str, Any] = {"skip_instance_cache": True}
    if scheme == "s3" and os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        # The S3-compatible endpoint variable mlendpoints-fetch and MLflow read (MinIO, Ceph, ...).
        options["client_kwargs"] = {"endpoint_url": os.environ["MLFLOW_S3_ENDPOINT_URL"]}
    elif scheme == "wasbs":
        uri = f"az://{rest}"  # adlfs reads container@account.blob.core.windows.net/path as az://
    return fsspec.core.url_to_fs(uri, **options)


def upload_folder(folder: Path, destination: str, name: str) -> str:
    """Copy `folder` (or a model file) to `<destination>/<name>/<digest>/<its name>`; that URI."""
    target = f"{check_destination(destination)}/{name}/{content_digest(folder)}/{folder.name}"
    fs, root = _filesystem(target)
    files = _files(folder)
    if any(p.as_posix() == _MLMODEL for p in files) and fs.exists(f"{root}/{_MLMODEL}"):
        return target  # the same content is there already, whole
    try:
        for relative in files:
            remote = root if relative == Path(".") else f"{root}/{relative.as_posix()}"
            fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(folder / relative), remote)
    except OSError as exc:  # s3fs, gcsfs and adlfs raise PermissionError, FileNotFoundError, ...
        raise UserError(
            f"--upload-to: copying {folder} to {target} failed: {exc}",
            "check the bucket and its credentials (AWS_*, MLFLOW_S3_ENDPOINT_URL, "
            "GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*)",
        ) from None
    return target
