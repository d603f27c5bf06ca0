"""azmlinfsrv 1.5.1's `azureml.contrib.services` for scoring scripts: `aml_request` (rawhttp, AMLRequest)
and `aml_response` (AMLResponse), so that an unchanged Azure script imports them.

No `azureml` package is shipped: `install()` aliases the two leaf modules in `sys.modules`, as
azmlinfsrv does (server/__init__.py). `from azureml.contrib.services.aml_request import rawhttp` then
finds the leaf without importing its parents, so a real `azureml` installation (azureml-core, mlflow's
azure extras) is neither shadowed nor needed; only its two `contrib.services` modules are replaced,
since the server must build the request run() gets and read the response it returns.
"""

from __future__ import annotations

import sys

from mlendpoints_serving.azureml_services import aml_request, aml_response

NAMES = {
    "azureml.contrib.services.aml_request": aml_request,
    "azureml.contrib.services.aml_response": aml_response,
}


def install() -> None:
    sys.modules.update(NAMES)
