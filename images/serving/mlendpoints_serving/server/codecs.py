"""One codec per protocol: request body -> decoded model input, predictions -> response body.

Codecs know the wire format of a protocol and nothing of HTTP connections, batching
or threads; the transport (app.py) picks the codec by route.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pandas as pd

from mlendpoints_serving.model import InputError, ModelInput, ServedModel
from mlendpoints_serving.model.core import Format, dumps, jsonable

JSON = "application/json"
CSV = "text/csv"


class ClientError(Exception):
    """A request the server refuses (4xx), with an error code and a message naming what was wrong."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def media_type(content_type: str | None, allowed: tuple[str, ...], missing_as: str | None = None) -> str:
    """The request's media type, when allowed and UTF-8; 415 otherwise."""
    if not content_type:
        if missing_as:
            return missing_as
        raise ClientError(
            415, "unsupported_media_type", f"Content-Type is required; use one of {list(allowed)}"
        )
    mime, *params = (p.strip() for p in content_type.split(";"))
    mime = mime.lower()
    if mime not in allowed:
        raise ClientError(
            415,
            "unsupported_media_type",
            f"Content-Type '{content_type}' is not supported; use one of {list(allowed)}",
        )
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise ClientError(415, "unsupported_media_type", f"only UTF-8 is supported, got {param}")
    return mime


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ClientError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None


def _object(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ClientError(
            400,
            "invalid_request",
            f"request body must be a JSON object with {what}, got {type(payload).__name__}",
        )
    return payload


Decoded = tuple[ModelInput, Any]  # the model input, and what the codec needs back to encode the reply


def _decode(model: ServedModel, fmt: Format, value: Any, params: Any) -> ModelInput:
    if params is not None and not isinstance(params, dict):
        raise InputError(f"'params' must be an object, got {type(params).__name__}", code="invalid_params")
    return model.decode(fmt, value, params)


class AzureCodec:
    """POST /score, Azure ML's no-code MLflow contract: {"input_data": ..., "params": {...}} -> list."""

    def decode(self, model: ServedModel, body: bytes, content_type: str | None) -> Decoded:
        media_type(content_type, (JSON,), missing_as=JSON)
        payload = _object(parse_json(body), "'input_data'")
        if "input_data" not in payload:
            raise ClientError(
                400,
                "invalid_request",
                f"request body must have 'input_data'; got keys {sorted(payload)[:10]}",
            )
        data = payload["input_data"]
        if isinstance(data, dict) and "data" in data and set(data) <= {"columns", "index", "data"}:
            fmt = Format.SPLIT  # a split-orient DataFrame
        elif isinstance(data, list):
            fmt = Format.INSTANCES  # a tensor, rows, or records
        elif isinstance(data, dict):
            fmt = Format.INPUTS  # named tensors / columns
        else:
            raise InputError(
                f"'input_data' must be a split DataFrame, a tensor or named tensors, "
                f"got {type(data).__name__}"
            )
        return _decode(model, fmt, data, payload.get("params")), None

    def encode(self, predictions: Any, context: Any) -> bytes:
        return dumps(jsonable(predictions))


class MlflowCodec:
    """POST /invocations as `mlflow models serve`: dataframe_split/records, instances or inputs; or CSV."""

    formats = (Format.SPLIT, Format.RECORDS, Format.INSTANCES, Format.INPUTS)

    def decode(self, model: ServedModel, body: bytes, content_type: str | None) -> Decoded:
        if media_type(content_type, (JSON, CSV)) == CSV:
            return model.decode(Format.FRAME, self._csv(model, body), None), None
        payload = _object(parse_json(body), "one of " + ", ".join(f.value for f in self.formats))
        present = [f for f in self.formats if f.value in payload]
        if len(present) != 1:
            raise ClientError(
                400,
                "invalid_request",
                "request body must have exactly one of "
                f"{[f.value for f in self.formats]}; got keys {sorted(payload)[:10]}",
            )
        return _decode(model, present[0], payload[present[0].value], payload.get("params")), None

    @staticmethod
    def _csv(model: ServedModel, body: bytes) -> pd.DataFrame:
        dtypes = _csv_dtypes(model)
        try:
            return pd.read_csv(io.StringIO(body.decode("utf-8")), dtype=dtypes)
        except Exception as exc:  # pandas raises many types for bad CSV
            raise InputError(
                f"body is not a valid CSV DataFrame with columns {list(dtypes or [])}: {exc}"
            ) from None

    def encode(self, predictions: Any, context: Any) -> bytes:
        return dumps({"predictions": jsonable(predictions)})


V2_DATATYPES = {
    "f": {8: "FP64", 4: "FP32", 2: "FP16"},
    "i": {8: "INT64", 4: "INT32", 2: "INT16", 1: "INT8"},
    "u": {8: "UINT64", 4: "UINT32", 2: "UINT16", 1: "UINT8"},
    "b": {1: "BOOL"},
}


def v2_datatype(dtype: np.dtype[Any]) -> str:
    return V2_DATATYPES.get(dtype.kind, {}).get(dtype.itemsize, "BYTES")


class V2Codec:
    """Open Inference Protocol (V2) REST: inputs [{name, shape, datatype, data}] -> outputs."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    def decode(self, model: ServedModel, body: bytes, content_type: str | None) -> Decoded:
        media_type(content_type, (JSON,), missing_as=JSON)
        payload = _object(parse_json(body), "'inputs'")
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise ClientError(400, "invalid_request", "'inputs' must be a non-empty list of tensors")
        tensors: dict[str, Any] = {}
        for i, t in enumerate(inputs):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or "data" not in t:
                raise ClientError(
                    400, "invalid_request", f"inputs[{i}] must have 'name', 'shape', 'datatype', 'data'"
                )
            tensors[t["name"]] = self._reshape(t, i, as_column=model.columns is not None)
        params = payload.get("parameters")
        request_id = payload.get("id")
        if model.tensors and None in model.tensors:
            return _decode(model, Format.INPUTS, next(iter(tensors.values())), params), request_id
        return _decode(model, Format.INPUTS, tensors, params), request_id

    @staticmethod
    def _reshape(tensor: dict[str, Any], i: int, as_column: bool) -> Any:
        data, shape = tensor["data"], tensor.get("shape")
        if not isinstance(data, list):
            raise InputError(f"inputs[{i}] '{tensor['name']}': 'data' must be a list")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise InputError(
                f"inputs[{i}] '{tensor['name']}': 'shape' must be a list of sizes, got {shape!r:.60}"
            )
        flat = data
        if data and isinstance(data[0], list):
            flat = np.asarray(data, dtype=object).ravel().tolist()
        if len(flat) != int(np.prod(shape)):
            raise InputError(
                f"inputs[{i}] '{tensor['name']}': shape {shape} needs {int(np.prod(shape))} "
                f"values, got {len(flat)}"
            )
        if as_column and (len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1)):
            return flat  # one column of a DataFrame model
        return np.asarray(flat, dtype=object).reshape(shape).tolist()

    def encode(self, predictions: Any, request_id: Any) -> bytes:
        outputs = []
        if isinstance(predictions, pd.DataFrame):
            columns = {str(c): predictions[c].to_numpy() for c in predictions.columns}
        else:
            values = predictions.to_numpy() if isinstance(predictions, pd.Series) else np.asarray(predictions)
            columns = {"predictions": values}
        for name, arr in columns.items():
            outputs.append(
                {
                    "name": name,
                    "shape": list(arr.shape),
                    "datatype": v2_datatype(arr.dtype),
                    "data": arr.ravel() if arr.dtype.kind in "fiub" else arr.ravel().tolist(),
                }
            )
        body: dict[str, Any] = {"model_name": self.model_name, "outputs": outputs}
        if request_id:
            body["id"] = request_id
        return dumps(body)


def _csv_dtypes(model: ServedModel) -> dict[str, Any] | None:
    """Column dtypes as MLflow's CSV parsing gives them (schema.pandas_types()), or None to infer."""
    if model.columns is not None:
        return {c.name: c.dtype for c in model.columns.columns}
    schema = model.input_schema
    if schema is None or not schema.has_input_names():
        return None
    return dict(zip(schema.input_names(), schema.pandas_types(), strict=True))
