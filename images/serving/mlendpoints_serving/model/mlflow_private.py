"""Every use of MLflow's private (underscored or undocumented) API, fenced in one module.

The scoring core reuses a few MLflow internals so that its answers and errors are
exactly `mlflow models serve`'s. They may change in any MLflow release: when
upgrading MLflow, this module is the one to check (the unit tests call every
function here). Nothing else in `mlendpoints_serving` may touch MLflow's private
names; tests/unit/serving/test_mlflow_private.py checks that.

MLflow is imported inside each function: importing it costs seconds, and the fast
path never needs it.
"""

from __future__ import annotations

from typing import Any


def sklearn_pyfunc_impl(estimator: Any) -> Any:
    """The pyfunc implementation MLflow's sklearn flavor wraps an estimator in (`_SklearnModelWrapper`)."""
    from mlflow.sklearn import _SklearnModelWrapper

    return _SklearnModelWrapper(estimator)


def pyfunc_impl(pyfunc: Any) -> Any:
    """The flavor's model inside a loaded `PyFuncModel` (its `_model_impl`)."""
    return pyfunc._model_impl


def enforce_params_schema(params: Any, schema: Any) -> Any:
    """MLflow's own check and conversion of inference params (`mlflow.models.utils._enforce_params_schema`);
    raises MlflowException."""
    from mlflow.models.utils import _enforce_params_schema

    return _enforce_params_schema(params, schema)


def parse_json_input(fmt: str, value: Any, input_schema: Any) -> Any:
    """A JSON input (`instances`, `inputs`, `dataframe_split`, ...) as `mlflow models serve` parses it
    (`mlflow.pyfunc.scoring_server.infer_and_parse_data`, not a documented API)."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    return infer_and_parse_data({fmt: value}, input_schema)
