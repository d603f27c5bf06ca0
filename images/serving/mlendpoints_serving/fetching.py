"""Fetching a model (or any model input) into a directory: the core of `mlendpoints-fetch`, shared
with `mlendpoints-serve --fetch-model-uri` (a pod scaled on load fetches in its server process).

MLflow URIs (models:/, runs:/) go through MLflow's artifact download (and the usual
MLFLOW_* auth env vars); everything else (s3://, gs://, abfss://, wasbs://, https://,
local or PVC paths) through fsspec. A tar.gz/zip is unpacked; a single pickled
estimator is wrapped as an MLflow sklearn model. The result must be an MLflow model.
With FETCH_MODE_INPUT nothing is unpacked, wrapped or required: a folder arrives as is and a
single file as DIR/<filename>, so the input is always a directory.
A record (resolved URI, registry version, checksum) is written next to it; a second
run that downloads the same content leaves the destination untouched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from mlendpoints_serving.contract import FETCH_MODE_INPUT, FETCH_MODE_MODEL

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

COMPONENT = "mlendpoints-fetch"  # the failure line's component, whichever process fetches
RECORD_NAME = ".mlendpoints-fetch.json"
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
PICKLES = (".pkl", ".pickle", ".joblib")
log = logging.getLogger("mlendpoints.fetch")


class FetchError(Exception):
    """A failure with its kind: not found, unauthorized, unreachable, not an MLflow model."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class Record:
    model_uri: str
    resolved_uri: str
    registry_version: str | None
    checksum: str


# -- errors ---------------------------------------------------------------------------------------
def classify(exc: BaseException, uri: str) -> FetchError:
    """Name what failed, from the exception chain of MLflow, botocore, gcsfs, Azure, aiohttp or the OS."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " ".join(f"{type(e).__name__} {e}" for e in chain)
    codes = {getattr(e, "error_code", None) for e in chain}
    statuses = {getattr(e, attr, None) for e in chain for attr in ("status", "status_code", "code")}
    if (
        codes & {"PERMISSION_DENIED", "UNAUTHENTICATED"}
        or statuses & {401, 403}
        or re.search(
            r"NoCredentials|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden|Unauthorized|"
            r"PermissionError|ClientAuthenticationError|CredentialUnavailable|AuthenticationFailed|"
            r"AuthorizationFailure|AuthorizationPermissionMismatch|\b40[13]\b",
            text,
        )
    ):
        return FetchError("unauthorized", f"{uri}: {exc}")
    if (
        codes & {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
        or statuses & {404}
        or re.search(
            r"FileNotFoundError|ResourceNotFoundError|NoSuchKey|NoSuchBucket|NotFound\b|Not Found|"
            r"does not exist|not found|\b404\b",
            text,
        )
    ):
        return FetchError("not found", f"{uri}: {exc}")
    if re.search(
        r"Connect|Timeout|Max retries|Name or service|unreachable|refused|EndpointConnection|"
        r"Cannot connect",
        text,
        re.I,
    ):
        return FetchError("unreachable", f"{uri}: {exc}")
    return FetchError("failed", f"{uri}: {type(exc).__name__}: {exc}")


# -- resolving and downloading --------------------------------------------------------------------
def resolve_registry(uri: str) -> tuple[str, str]:
    """models:/name/version | models:/name@alias | models:/name/latest -> (models:/name/N, N)."""
    from mlflow import MlflowClient

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/([^/]+))/?", uri)
    if not match:
        raise FetchError(
            "invalid URI", f"{uri}: expected models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest"
        )
    name, alias, version = match.groups()
    client = MlflowClient()
    if alias:
        version = client.get_model_version_by_alias(name, alias).version
    elif version == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise FetchError("not found", f"{uri}: registered model '{name}' has no versions")
        version = str(max(int(v.version) for v in versions))
    else:
        client.get_model_version(name, version)  # fails clearly when missing
    return f"models:/{name}/{version}", str(version)


def download_mlflow(uri: str, into: Path) -> Path:
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))


def open_fsspec(uri: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem and path of `uri`; credentials come from each store's usual env vars.

    s3:// (s3fs): AWS_* and MLFLOW_S3_ENDPOINT_URL. gs:// (gcsfs): Application Default Credentials,
    STORAGE_EMULATOR_HOST. abfss://, wasbs:// (adlfs): AZURE_STORAGE_CONNECTION_STRING, or the account
    named in the URI with AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, a service principal
    (AZURE_STORAGE_CLIENT_ID/_SECRET, AZURE_STORAGE_TENANT_ID) or DefaultAzureCredential.
    """
    import fsspec

    scheme, _, rest = uri.partition("://")
    scheme = scheme.lower()
    options: dict[str, object] = {}
    if scheme == "s3" and os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        options["client_kwargs"] = {"endpoint_url": os.environ["MLFLOW_S3_ENDPOINT_URL"]}
    elif scheme in ("gs", "gcs"):
        # gcsfs's experimental layer (on unless this is false) asks the Storage Control gRPC API for
        # each bucket's layout: a permission read-only identities often lack, retried for a minute
        # where the API is absent (emulators). A download needs only the JSON API.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    elif scheme in ("wasb", "wasbs"):
        # adlfs reads container@account.blob.core.windows.net/path under its own az:// scheme.
        uri = f"az://{rest}"
    return fsspec.core.url_to_fs(uri, **options)


def download_fsspec(uri: str, into: Path) -> Path:
    fs, path = open_fsspec(uri)
    path = path.rstrip("/")
    if fs.isdir(path):
        target = into / "model"
        target.mkdir(parents=True)
        for remote in fs.find(path):  # file by file: an HTTP folder is listed from its index page's links
            relative = Path(remote[len(path) :].lstrip("/"))
            if not relative.parts or ".." in relative.parts:
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target / relative))
        return target
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri} does not exist")
    target = into / Path(path).name
    fs.get(path, str(target))
    return target


def as_model_dir(fetched: Path, work: Path) -> Path:
    """The MLflow model directory inside what was fetched (unpacking or wrapping a single file)."""
    if fetched.is_file():
        name = fetched.name.lower()
        if name.endswith(ARCHIVES):
            unpacked = work / "unpacked"
            if name.endswith(".zip"):
                with zipfile.ZipFile(fetched) as zf:
                    zf.extractall(unpacked)
            else:
                with tarfile.open(fetched) as tf:
                    tf.extractall(unpacked, filter="data")
            fetched = unpacked
        elif name.endswith(PICKLES):
            return wrap_estimator(fetched, work / "wrapped")
        elif name == "mlmodel":
            raise FetchError("not an MLflow model", f"{fetched.name} alone is not a model; fetch its folder")
        else:
            raise FetchError(
                "not an MLflow model",
                f"{fetched.name} is neither an MLflow model folder, an "
                f"archive ({', '.join(ARCHIVES)}) nor a pickled estimator ({', '.join(PICKLES)})",
            )
    if (fetched / "MLmodel").is_file():
        return fetched
    candidates = [p.parent for p in fetched.rglob("MLmodel") if len(p.relative_to(fetched).parts) <= 3]
    if len(candidates) == 1:
        return candidates[0]
    raise FetchError(
        "not an MLflow model",
        "no MLmodel file found"
        if not candidates
        else f"several MLmodel files found: {[str(c.relative_to(fetched)) for c in candidates]}",
    )


def wrap_estimator(path: Path, dest: Path) -> Path:
    """A single pickled/joblib scikit-learn estimator -> an MLflow sklearn model (no signature)."""
    import joblib
    import mlflow.sklearn

    try:
        estimator = joblib.load(path)
    except Exception as exc:
        raise FetchError("not an MLflow model", f"{path.name} cannot be unpickled: {exc}") from exc
    if not hasattr(estimator, "predict"):
        raise FetchError(
            "not an MLflow model", f"{path.name} holds a {type(estimator).__name__}, no predict()"
        )
    mlflow.sklearn.save_model(estimator, str(dest), serialization_format="cloudpickle")
    return dest


def as_input_dir(fetched: Path, work: Path) -> Path:
    """A model input: a folder as is; a single file inside a folder of its own, under its own name.

    Azure ML hands a single-file model input over as the file itself, and code that opens the
    input as a folder fails; here an input is always a directory.
    """
    if fetched.is_dir():
        return fetched
    folder = Path(tempfile.mkdtemp(dir=work))  # a fresh name: the file may be called anything
    return Path(shutil.move(str(fetched), folder / fetched.name)).parent


def checksum(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != RECORD_NAME):
        digest.update(str(file.relative_to(model_dir)).encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def read_record(dest: Path) -> Record | None:
    try:
        return Record(**orjson.loads((dest / RECORD_NAME).read_bytes()))
    except (OSError, ValueError, TypeError):
        return None


def install(model_dir: Path, dest: Path, record: Record) -> None:
    """Replace dest's content with the model (dest itself may be a mount point, so it is kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    # The record goes first and comes back last: an install cut short leaves no record claiming
    # the half-moved content, so the next run fetches again instead of keeping it.
    (dest / RECORD_NAME).unlink(missing_ok=True)
    for old in dest.iterdir():
        if old.name.startswith(".mlendpoints-fetch"):
            continue
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    for item in model_dir.iterdir():
        shutil.move(str(item), dest / item.name)
    (dest / RECORD_NAME).write_bytes(orjson.dumps(asdict(record), option=orjson.OPT_INDENT_2))


def fetch(uri: str, dest: Path, mode: str = FETCH_MODE_MODEL) -> tuple[Record, bool]:
    """Fetch `uri` into `dest`; returns the record and whether dest changed.

    `mode` FETCH_MODE_MODEL: the result must be an MLflow model; FETCH_MODE_INPUT: anything, as is.
    """
    # Fail fast on an unreachable tracking server instead of MLflow's long default retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mlendpoints-fetch-", dir=dest) as tmp:
        work = Path(tmp)
        version = None
        resolved = uri
        try:
            if uri.startswith("models:/"):
                resolved, version = resolve_registry(uri)
                fetched = download_mlflow(resolved, work / "download")
            elif uri.startswith("runs:/"):
                fetched = download_mlflow(uri, work / "download")
            else:
                local = Path(uri.removeprefix("file://"))
                if "://" not in uri or uri.startswith("file://"):
                    if not local.exists():
                        raise FileNotFoundError(f"{local} does not exist")
                    resolved = str(local.resolve())
                fetched = download_fsspec(uri, work)
        except FetchError:
            raise
        except Exception as exc:
            raise classify(exc, uri) from exc
        model_dir = as_input_dir(fetched, work) if mode == FETCH_MODE_INPUT else as_model_dir(fetched, work)
        record = Record(
            model_uri=uri, resolved_uri=resolved, registry_version=version, checksum=checksum(model_dir)
        )
        previous = read_record(dest)
        in_place = mode == FETCH_MODE_INPUT or (dest / "MLmodel").is_file()
        if previous is not None and previous.checksum == record.checksum and in_place:
            return previous, False
        install(model_dir, dest, record)
        return record, True
