"""Azure's own check of an Azure file: azure-ai-ml's loaders, offline (the `mlendpoints[azure]` extra).

`load_online_deployment` and its siblings parse a file with the marshmallow schemas Azure's CLI uses,
without a workspace: a field Azure does not know, a wrong type, a local path that does not exist.
The import asks them first, so a file Azure rejects is reported with Azure's own words, not with a
mapping error further on. azure-ai-ml is imported only here and only when the check runs: it is an
optional extra, and it takes seconds to import.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from mlendpoints.azureml.context import AzureKind

INSTALL_HINT = "pip install 'mlendpoints[azure]' (azure-ai-ml)"
# azure-ai-ml's module of load_* functions: the package exports all but load_model_batch_deployment.
_LOAD_FUNCTIONS = "azure.ai.ml.entities._load_functions"
_LOADERS = {
    AzureKind.MANAGED_ONLINE_ENDPOINT: "load_online_endpoint",
    AzureKind.KUBERNETES_ONLINE_ENDPOINT: "load_online_endpoint",
    AzureKind.MANAGED_ONLINE_DEPLOYMENT: "load_online_deployment",
    AzureKind.KUBERNETES_ONLINE_DEPLOYMENT: "load_online_deployment",
    AzureKind.BATCH_ENDPOINT: "load_batch_endpoint",
    AzureKind.MODEL_BATCH_DEPLOYMENT: "load_model_batch_deployment",
    AzureKind.COMMAND_JOB: "load_job",
}
# Azure's messages end with links to its schema reference and its VS Code extension: not the reason.
_TRAILER = re.compile(r"\s*\n\s*\n\s*(Visit this link|The easiest way to author).*\Z", re.DOTALL)


def available() -> bool:
    """Whether azure-ai-ml is installed (without importing it)."""
    try:
        return importlib.util.find_spec("azure.ai.ml") is not None
    except ModuleNotFoundError:  # no `azure` namespace package at all
        return False


def loader_name(kind: AzureKind, doc: dict[str, Any]) -> str:
    """The azure-ai-ml function that loads `doc`."""
    if kind is AzureKind.MODEL_BATCH_DEPLOYMENT and "settings" not in doc and doc.get("type") != "model":
        return "load_batch_deployment"  # the older batchDeployment layout: settings at the top level
    return _LOADERS[kind]


@contextmanager
def _quiet() -> Iterator[None]:
    """azure-ai-ml logs a warning per experimental class it meets (data_collector, ...): not the user's."""
    loggers = [logging.getLogger(name) for name in ("azure.ai.ml", "azure")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def azure_refusal(source: Path, kind: AzureKind, doc: dict[str, Any]) -> str | None:
    """Azure's message when its loader refuses `doc` (read from `source`), else None.

    The document is passed as a stream (a file may hold several); relative paths in it are read from
    the file's folder, as Azure reads them.
    """
    loaders = importlib.import_module(_LOAD_FUNCTIONS)
    exceptions = importlib.import_module("azure.ai.ml.exceptions")
    marshmallow = importlib.import_module("marshmallow.exceptions")
    load = getattr(loaders, loader_name(kind, doc))
    stream = io.StringIO(yaml.safe_dump(doc, sort_keys=False))
    try:
        with _quiet():
            load(stream, relative_origin=str(source))
    except (marshmallow.ValidationError, exceptions.MlException, yaml.YAMLError) as exc:
        return _TRAILER.sub("", str(getattr(exc, "message", None) or exc)).strip()
    return None
