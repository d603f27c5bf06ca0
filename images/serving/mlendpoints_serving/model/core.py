"""Load an MLflow model once; decode input against its signature; predict; split batches.

The fast path: when the signature is made of scalar columns or tensors, input is
validated and converted here once (model/schema.py) and the flavor's own predict
is called directly, skipping pyfunc's per-call schema enforcement (most of a
single-row predict's cost). Anything else (no signature, type-hint signatures,
arrays/objects/datetime columns, DataFrames for tensor models) takes the generic
path: MLflow's parser and `PyFuncModel.predict`, exactly as `mlflow models serve`.

scikit-learn models are loaded natively (as MLflow's sklearn flavor does, from the
MLmodel file read with PyYAML) without importing MLflow: importing it costs ~50 MB and
~1 s per worker. MLflow is imported only when something needs it (the generic path,
a params schema, V2 metadata): the PyFuncModel is then built around the same estimator.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import pickle
import time
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from mlendpoints_serving.model import device as devices
from mlendpoints_serving.model import kernels, mlflow_private
from mlendpoints_serving.model.errors import InputError, ModelError
from mlendpoints_serving.model.schema import SCALAR_TYPES, ColumnDecoder, Columns, ColumnSpec, TensorDecoder

log = logging.getLogger("mlendpoints.model")


class Format(StrEnum):
    """Shapes input arrives in, across protocols."""

    SPLIT = "dataframe_split"  # {"columns", "data", "index"?}
    RECORDS = "dataframe_records"  # [{col: value}]
    INSTANCES = "instances"  # rows: [[...]] or [{...}] (or a tensor)
    INPUTS = "inputs"  # a tensor (nested list) or named columns/tensors (dict of lists)
    FRAME = "frame"  # a DataFrame already parsed (CSV)
    COLUMN_LISTS = "column_lists"  # one list per signature column, in order, of one length (V2)
    # The (rows, columns) Fortran-ordered block of a shared-dtype signature, already decoded and
    # checked by V2's compiled decoder: what COLUMN_LISTS decodes to.
    COLUMN_BLOCK = "column_block"


@dataclass(slots=True)  # built for every request: slots make it cheaper to build and read
class ModelInput:
    """Decoded, validated input of one request, ready to predict."""

    data: Any
    params: dict[str, Any] | None
    rows: int | None = None  # None: cannot be batched with others
    batch_key: Hashable | None = None  # inputs with equal keys may be concatenated
    generic: bool = False  # data is the protocol payload for MLflow's own parser


def _params_key(params: dict[str, Any] | None) -> bytes | None:
    """Inputs with equal keys were given equal params (None: params that cannot be compared)."""
    try:
        return orjson.dumps(params, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return None


NO_PARAMS = _params_key(None)  # the params key of a request without params


@dataclass
class ServedModel:
    model_dir: Path
    mlmodel: dict[str, Any]  # the MLmodel file, as PyYAML reads it
    model_impl: Any  # the flavor's pyfunc implementation, or the estimator itself when loaded natively
    load_seconds: float
    device: str | None = None  # the torch device ('cpu', 'cuda:0') of a PyTorch model; None: not one
    device_name: str = "cpu"  # the device's own name ('NVIDIA H200'), or 'cpu'
    native: bool = False  # loaded without MLflow (scikit-learn)
    loaded_pyfunc: Any = None  # mlflow.pyfunc.PyFuncModel, when MLflow loaded the model
    columns: ColumnDecoder | None = None
    tensors: dict[str | None, TensorDecoder] = field(default_factory=dict)
    input_example: Any = None  # the serving input example (a request body), when saved

    def __post_init__(self) -> None:
        self.flavors = list(self.mlmodel.get("flavors", {}))
        self._predict_fn_name = self.mlmodel["flavors"]["python_function"].get("predict_fn", "predict")
        self._predict_fn = getattr(self.model_impl, self._predict_fn_name)
        params_arg = inspect.signature(self._predict_fn).parameters.get("params")
        self._pass_params = params_arg is not None and params_arg.kind != inspect.Parameter.VAR_KEYWORD
        signature = self.mlmodel.get("signature") or {}
        self._has_params_schema = bool(signature.get("params"))
        typed = self.mlmodel.get("is_signature_from_type_hint") or self.mlmodel.get("type_hint_from_example")
        if signature.get("inputs") and not typed:
            self._compile(json.loads(signature["inputs"]))
        self._array_predict = self._sklearn_array_predict(self._predict_fn_name)
        if not self.fast:
            # every request takes the generic path: build MLflow's model now, not on the first request
            self.loaded_pyfunc = self.pyfunc

    # -- MLflow's view of the model (imports MLflow on first use when loaded natively) -----------
    @cached_property
    def pyfunc(self) -> Any:
        """mlflow.pyfunc.PyFuncModel: the loaded one, or one around the natively loaded estimator."""
        if self.loaded_pyfunc is not None:
            return self.loaded_pyfunc
        from mlflow.models import Model
        from mlflow.pyfunc import PyFuncModel

        meta = Model.load(str(self.model_dir))
        impl = mlflow_private.sklearn_pyfunc_impl(self.model_impl)
        return PyFuncModel(model_meta=meta, model_impl=impl, predict_fn=self._predict_fn_name)

    @cached_property
    def input_schema(self) -> Any:
        return self.pyfunc.metadata.get_input_schema()

    @cached_property
    def output_schema(self) -> Any:
        return self.pyfunc.metadata.get_output_schema()

    @cached_property
    def params_schema(self) -> Any:
        return self.pyfunc.metadata.get_params_schema() if self._has_params_schema else None

    def _sklearn_array_predict(self, predict_fn: str) -> Callable[[Any], Any] | None:
        """The estimator's own predict, to call with the 2-D block instead of a DataFrame, or None.

        scikit-learn validates a DataFrame (dtypes, feature names) at several times the cost of
        the prediction. When the estimator was fitted on exactly the signature's columns, in
        order, all of one numeric dtype, the block is the array its validation would produce
        from the DataFrame. Used only after a probe gives bit-identical output both ways.
        """
        estimator = self.model_impl if self.native else getattr(self.model_impl, "sklearn_model", None)
        cols = self.columns
        if (
            estimator is None
            or cols is None
            or cols.shared_dtype is None
            or cols.shared_dtype.kind not in "fiu"
        ):
            return None
        fitted_on = getattr(estimator, "feature_names_in_", None)
        if fitted_on is None or list(fitted_on) != cols.names:
            return None
        predict = getattr(estimator, predict_fn, None)
        if predict is None:
            return None
        width, dtype = len(cols.names), cols.shared_dtype

        # Fortran blocks only: the decoders and predict_many hand the array path nothing else (a
        # frame of a C-ordered block sums in another order than the block itself).
        def via_frame(block: np.ndarray[Any, Any]) -> Any:
            return predict(cols.frame(block))

        if not _same_output(predict, via_frame, dtype, width, layouts=(np.asfortranarray,)):
            return None
        # The one thing the array skips is the feature-name check, already done by the decoder.
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
        kernel = kernels.linear(estimator, predict_fn)
        if kernel is not None and _same_output(kernel, predict, dtype, width):
            return kernel
        return predict  # type: ignore[no-any-return]

    @property
    def fast(self) -> bool:
        return self.columns is not None or bool(self.tensors)

    def _compile(self, inputs: list[dict[str, Any]]) -> None:
        """Decoders from the signature's JSON (as MLflow's Schema.from_json reads it)."""
        if inputs and all(spec.get("type") == "tensor" for spec in inputs):
            self.tensors = {}
            for spec in inputs:
                tensor = spec["tensor-spec"]
                name = spec.get("name")
                self.tensors[name] = TensorDecoder(name, np.dtype(tensor["dtype"]), tuple(tensor["shape"]))
            return
        specs = []
        for col in inputs:
            type_name, name = col.get("type"), col.get("name")
            if type_name not in SCALAR_TYPES or not col.get("required", True) or name is None:
                return  # arrays, objects, optional columns...: MLflow's own enforcement handles them
            specs.append(ColumnSpec(name, type_name))
        self.columns = ColumnDecoder(specs)

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, fmt: Format, value: Any, params: Any = None) -> ModelInput:
        """Validate `value` (in shape `fmt`) against the signature; raises InputError."""
        if self.columns is not None:
            frame = self._decode_columns(self.columns, fmt, value)
            return self._fast_input(frame, len(frame), ("frame",), params)
        elif self.tensors and fmt in (Format.INSTANCES, Format.INPUTS):
            if None in self.tensors and len(self.tensors) == 1:
                spec = self.tensors[None]
                arr = spec.decode(value)
                batchable = arr.ndim > 0 and spec.shape[0] == -1
                return self._fast_input(
                    arr, len(arr) if batchable else None, ("tensor", arr.shape[1:]), params
                )
            if isinstance(value, dict):
                return self._fast_input(self._decode_named_tensors(value), None, None, params)
        return ModelInput(data=(fmt, value), params=params, generic=True)

    def _decode_columns(self, cols: ColumnDecoder, fmt: Format, value: Any) -> Columns:
        if fmt is Format.COLUMN_BLOCK:
            return value  # type: ignore[no-any-return]
        if fmt is Format.SPLIT:
            if not isinstance(value, dict):
                raise InputError(f"'{fmt.value}' must be an object with 'columns' and 'data'")
            if "data" not in value:
                raise InputError(f"'{fmt.value}' has no 'data'; expected rows of [{cols.describe()}]")
            given = value.get("columns")
            if given is not None and not isinstance(given, list):
                raise InputError(f"'columns' must be a list of column names, got {type(given).__name__}")
            return cols.from_rows(value["data"], given)
        if fmt is Format.RECORDS:
            return cols.from_records(value)
        if fmt is Format.FRAME:
            return cols.from_frame(value)
        if fmt is Format.COLUMN_LISTS:
            return cols.from_lists(value)
        if isinstance(value, dict):
            return cols.from_columns(value)
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            return cols.from_records(value)
        if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
            return cols.from_rows(value)
        raise InputError(f"'{fmt.value}' must be rows, records or an object of columns [{cols.describe()}]")

    def _decode_named_tensors(self, value: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        names = [n for n in self.tensors if n is not None]
        missing = [n for n in names if n not in value]
        if missing:
            raise InputError(
                f"missing tensor(s) {missing}; the model expects "
                + ", ".join(f"'{n}': {self.tensors[n].describe()}" for n in names)
            )
        return {n: self.tensors[n].decode(value[n]) for n in names}

    def _enforce_params(self, params: Any) -> Any:
        if not self._has_params_schema:
            # As MLflow's _enforce_params_schema with no schema, without importing MLflow.
            if params in (None, {}):
                return params
            log.warning("params ignored: the model's signature defines no params schema")
            return {}
        from mlflow.exceptions import MlflowException

        try:
            return mlflow_private.enforce_params_schema(params, self.params_schema)
        except MlflowException as exc:
            raise InputError(f"params: {exc.message}", code="invalid_params") from None

    def _fast_input(self, data: Any, rows: int | None, key: Hashable, params: Any) -> ModelInput:
        # Most requests have no params, and the model no params schema: nothing to enforce or serialize.
        enforced = None if params is None and not self._has_params_schema else self._enforce_params(params)
        pkey = None if rows is None else NO_PARAMS if enforced is None else _params_key(enforced)
        batch_key = None if pkey is None else (key, pkey)
        return ModelInput(data=data, params=enforced, rows=rows, batch_key=batch_key)

    # -- prediction (blocking: call from a worker thread) ----------------------------------------
    def predict(self, inp: ModelInput) -> Any:
        if inp.generic:
            return self._predict_generic(inp)
        data = inp.data
        try:
            if self.columns is not None and isinstance(data, np.ndarray):
                if self._array_predict is not None:
                    return self._array_predict(data)
                data = self.columns.frame(data)
            if self._pass_params:
                return self._predict_fn(data, params=inp.params)
            return self._predict_fn(data)
        except Exception as exc:
            raise devices.failure(exc, self.device) from exc

    def input_fault(self, inp: ModelInput) -> str | None:
        """What in this input the model most likely raised on (no rows, null/NaN values), or None.

        Asked only after predict() raised: the signature let the input through, the model
        refused it. Such a failure is the client's to fix (a 400 naming the problem, as
        `mlflow models serve` answers 400), not a broken model (500).
        """
        data = inp.data
        if inp.generic:
            fmt, data = data
            if fmt is not Format.FRAME:
                return None  # the protocol payload: MLflow's parser made the frame; not kept
        if hasattr(data, "__len__") and not isinstance(data, dict) and len(data) == 0:
            return "the input has no rows"
        if isinstance(data, pd.DataFrame):
            nulls = [str(c) for c in data.columns[data.isna().to_numpy().any(axis=0)]]
            return f"column(s) {nulls} have null/NaN values" if nulls else None
        if isinstance(data, np.ndarray) and data.dtype.kind in "fc" and np.isnan(data).any():
            if self.columns is not None and data.ndim == 2:
                bad = np.atleast_1d(np.isnan(data).any(axis=0)).tolist()
                nulls = [n for n, b in zip(self.columns.names, bad, strict=True) if b]
                return f"column(s) {nulls} have null/NaN values"
            return "the tensor has null/NaN values"
        if isinstance(data, dict):
            nulls = [
                str(n)
                for n, v in data.items()
                if isinstance(v, np.ndarray) and v.dtype.kind in "fc" and np.isnan(v).any()
            ]
            return f"tensor(s) {nulls} have null/NaN values" if nulls else None
        return None

    def frame(self, inp: ModelInput) -> Any:
        """The input as the flavor's predict receives it (a DataFrame for column signatures)."""
        if self.columns is not None and isinstance(inp.data, np.ndarray):
            return self.columns.frame(inp.data)
        return inp.data

    def predict_many(self, inputs: Sequence[ModelInput]) -> list[Any]:
        """One predict over inputs sharing a batch key, split back per input; identical to one by one."""
        if len(inputs) == 1:
            return [self.predict(inputs[0])]
        first = inputs[0].data
        data: Any = (
            pd.concat([i.data for i in inputs], ignore_index=True)
            if isinstance(first, pd.DataFrame)
            else np.concatenate([i.data for i in inputs])
        )
        if self.columns is not None and isinstance(data, np.ndarray):
            data = np.asfortranarray(data)
        out = self.predict(ModelInput(data=data, params=inputs[0].params))
        total = sum(i.rows or 0 for i in inputs)
        if not hasattr(out, "__len__") or len(out) != total:
            return [self.predict(i) for i in inputs]  # not row-aligned: cannot split
        parts, start = [], 0
        for i in inputs:
            end = start + (i.rows or 0)
            parts.append(out.iloc[start:end] if isinstance(out, pd.DataFrame | pd.Series) else out[start:end])
            start = end
        return parts

    def _predict_generic(self, inp: ModelInput) -> Any:
        from mlflow.exceptions import MlflowException

        fmt, value = inp.data
        try:
            data = (
                value
                if fmt is Format.FRAME
                else mlflow_private.parse_json_input(fmt.value, value, self.input_schema)
            )
        except MlflowException as exc:
            raise InputError(exc.message) from None
        except Exception as exc:  # MLflow's parser raises plain errors for odd shapes
            raise InputError(f"input does not fit the model: {exc}") from None
        try:
            return self.pyfunc.predict(data, params=inp.params)
        except MlflowException as exc:
            if exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
                raise InputError(exc.message) from None
            raise ModelError(exc) from exc
        except Exception as exc:
            raise devices.failure(exc, self.device) from exc


def _same_output(
    ours: Callable[[Any], Any],
    theirs: Callable[[Any], Any],
    dtype: np.dtype[Any],
    width: int,
    layouts: tuple[Callable[[Any], Any], ...] = (np.asfortranarray, np.ascontiguousarray),
) -> bool:
    """Whether `ours` gives what `theirs` gives, bit for bit (type, dtype, values), on blocks of
    `width` columns of a few sizes in each of `layouts`: the load-time probe behind each faster
    way to the same prediction (the array for the DataFrame, the kernel for the estimator)."""
    rng = np.random.default_rng(1)
    for rows in (1, 7, 33, 257):
        block = rng.normal(scale=100, size=(rows, width)).astype(dtype)
        for probe in (layout(block) for layout in layouts):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ours_out, theirs_out = ours(probe), theirs(probe)
            except Exception:
                return False
            same_type = type(ours_out) is type(theirs_out) and getattr(ours_out, "dtype", None) == getattr(
                theirs_out, "dtype", None
            )
            if not same_type or not np.array_equal(ours_out, theirs_out):
                return False
    return True


# -- output -------------------------------------------------------------------------------------
def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def jsonable(predictions: Any) -> Any:
    """As MLflow's scoring server (_get_jsonable_obj): DataFrames/Series -> records, arrays -> lists."""
    if isinstance(predictions, np.ndarray):
        # orjson writes numeric arrays natively
        return predictions if predictions.dtype.kind in "fiub" else predictions.tolist()
    if isinstance(predictions, pd.Series):
        predictions = pd.DataFrame(predictions)
    if isinstance(predictions, pd.DataFrame):
        if not all(isinstance(c, str) for c in predictions.columns):
            # e.g. mlflow.pytorch's DataFrame of columns 0, 1, 2: JSON keys are strings ("0"), as
            # json.dumps writes them in MLflow's server; orjson refuses other keys.
            predictions = predictions.rename(columns=str)
        return predictions.to_dict(orient="records")
    return predictions


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


# -- loading ------------------------------------------------------------------------------------
def _load_input_example(model_dir: Path, mlmodel: dict[str, Any]) -> Any:
    info = mlmodel.get("saved_input_example_info") or {}
    path = info.get("serving_input_path")
    if not path or not (model_dir / path).is_file():
        return None
    try:
        return json.loads((model_dir / path).read_text())
    except (OSError, ValueError):
        return None


def _device_config(mlmodel: dict[str, Any], device: str, worker: int = 0) -> dict[str, Any] | None:
    """PyTorch models load on the GPU when CUDA is visible (device 'auto'), or on the device asked for;
    worker i of several takes GPU i mod count (model/device.py)."""
    if not devices.takes_device(mlmodel):
        return None
    return {"device": devices.choose(device, worker)}


_SKLEARN_FORMATS = ("skops", "pickle", "cloudpickle")
# The methods MLflow's sklearn wrapper exposes as a pyfunc predict_fn.
_SKLEARN_PREDICT_FNS = ("predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba", "score")


def _natively_loadable(mlmodel: dict[str, Any]) -> bool:
    """A scikit-learn model that MLflow's sklearn flavor would load with nothing more than its loader.

    Anything else (custom code paths, a legacy `data` layout, pickle loading turned off)
    goes through MLflow, which also gives the same errors as `mlflow models serve`.
    """
    flavors = mlmodel.get("flavors", {})
    pyfunc_conf, sklearn_conf = flavors.get("python_function", {}), flavors.get("sklearn")
    allow_pickle = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").lower() in ("true", "1")
    return (
        sklearn_conf is not None
        and allow_pickle
        and pyfunc_conf.get("loader_module") == "mlflow.sklearn"
        and "model_path" in pyfunc_conf
        and "data" not in pyfunc_conf
        and not pyfunc_conf.get("code")
        and not sklearn_conf.get("code")
        and sklearn_conf.get("serialization_format", "pickle") in _SKLEARN_FORMATS
        and pyfunc_conf.get("predict_fn", "predict") in _SKLEARN_PREDICT_FNS
    )


def _load_sklearn(model_dir: Path, mlmodel: dict[str, Any]) -> Any:
    """The estimator, read as mlflow.sklearn._load_model_from_local_file reads it."""
    sklearn_conf = mlmodel["flavors"]["sklearn"]
    path = model_dir / mlmodel["flavors"]["python_function"]["model_path"]
    serialization = sklearn_conf.get("serialization_format", "pickle")
    if serialization == "skops":
        import skops.io

        return skops.io.load(path, trusted=sklearn_conf.get("skops_trusted_types"))
    with path.open("rb") as fh:
        if serialization == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(fh)
        return pickle.load(fh)  # loading a model runs its code, as in MLflow


def load(model_dir: str | Path, device: str = "auto", worker: int = 0) -> ServedModel:
    import yaml

    model_dir = Path(model_dir)
    if not (model_dir / "MLmodel").is_file():
        raise FileNotFoundError(f"{model_dir} is not an MLflow model directory (no MLmodel file)")
    started = time.perf_counter()
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    config = _device_config(mlmodel, device, worker)
    native = _natively_loadable(mlmodel)
    if native:
        model_impl, pyfunc = _load_sklearn(model_dir, mlmodel), None
    else:
        import mlflow.pyfunc

        # suppress_warnings skips MLflow's requirements check, which scans every installed
        # distribution (~40% of loading a small model); the server logs its own, cheaper check.
        try:
            pyfunc = mlflow.pyfunc.load_model(str(model_dir), suppress_warnings=True, model_config=config)
        except Exception as exc:
            if not (device == "auto" and devices.pinned_to_cpu(exc, config)):
                raise
            # MLflow's default format (pt2, torch.export) keeps the device the model was saved on.
            log.warning(
                "the model was exported (torch.export, MLflow's pt2 format) with its weights on the CPU "
                "and cannot move to %s: serving it on the CPU. To serve it on the GPU, save it with "
                "serialization_format='pickle', or export it from the GPU (model.to('cuda'))",
                (config or {}).get("device"),
            )
            config = {"device": devices.CPU}
            pyfunc = mlflow.pyfunc.load_model(str(model_dir), suppress_warnings=True, model_config=config)
        model_impl = mlflow_private.pyfunc_impl(pyfunc)
    served = ServedModel(
        model_dir=model_dir,
        mlmodel=mlmodel,
        model_impl=model_impl,
        load_seconds=0.0,
        device=(config or {}).get("device"),
        device_name=devices.describe((config or {}).get("device") or devices.CPU),
        native=native,
        loaded_pyfunc=pyfunc,
        input_example=_load_input_example(model_dir, mlmodel),
    )
    served.load_seconds = time.perf_counter() - started
    log.info(
        "model loaded",
        extra={
            "fields": {
                "model_dir": str(model_dir),
                "seconds": round(served.load_seconds, 3),
                "flavors": served.flavors,
                "fast_path": served.fast,
                "native": native,
                "device": served.device or "cpu",
                "device_name": served.device_name,
            }
        },
    )
    return served
