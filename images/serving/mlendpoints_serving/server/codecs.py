"""One codec per protocol: request body -> decoded model input, predictions -> response body.

Codecs know the wire format of a protocol and nothing of HTTP connections, batching
or threads; the transport (app.py) picks the codec by route.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

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


@lru_cache(maxsize=64)  # clients send the same few Content-Type values; refusals are not cached
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


def json_object(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ClientError(
            400,
            "invalid_request",
            f"request body must be a JSON object with {what}, got {type(payload).__name__}",
        )
    return payload


Decoded = tuple[ModelInput, Any]  # the model input, and what the codec needs back to encode the reply


def decode_input(model: ServedModel, fmt: Format, value: Any, params: Any) -> ModelInput:
    if params is not None and not isinstance(params, dict):
        raise InputError(f"'params' must be an object, got {type(params).__name__}", code="invalid_params")
    return model.decode(fmt, value, params)


class AzureCodec:
    """POST /score, Azure ML's no-code MLflow contract: {"input_data": ..., "params": {...}} -> list."""

    def decode(self, model: ServedModel, body: bytes, content_type: str | None) -> Decoded:
        media_type(content_type, (JSON,), missing_as=JSON)
        payload = json_object(parse_json(body), "'input_data'")
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
        return decode_input(model, fmt, data, payload.get("params")), None

    def encode(self, predictions: Any, context: Any) -> bytes:
        return dumps(jsonable(predictions))


class MlflowCodec:
    """POST /invocations as `mlflow models serve`: dataframe_split/records, instances or inputs; or CSV."""

    formats = (Format.SPLIT, Format.RECORDS, Format.INSTANCES, Format.INPUTS)
    # Once, not per request: an enum member's .value is a descriptor call (nine a request were 3% of it).
    _keys = tuple((f.value, f) for f in formats)
    _names = [f.value for f in formats]
    _one_of = "one of " + ", ".join(_names)

    def decode(self, model: ServedModel, body: bytes, content_type: str | None) -> Decoded:
        if media_type(content_type, (JSON, CSV)) == CSV:
            return model.decode(Format.FRAME, self._csv(model, body), None), None
        payload = json_object(parse_json(body), self._one_of)
        present = [pair for pair in self._keys if pair[0] in payload]
        if len(present) != 1:
            raise ClientError(
                400,
                "invalid_request",
                f"request body must have exactly one of {self._names}; got keys {sorted(payload)[:10]}",
            )
        key, fmt = present[0]
        return decode_input(model, fmt, payload[key], payload.get("params")), None

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


def _csv_dtypes(model: ServedModel) -> dict[str, Any] | None:
    """Column dtypes as MLflow's CSV parsing gives them (schema.pandas_types()), or None to infer."""
    if model.columns is not None:
        return {c.name: c.dtype for c in model.columns.columns}
    schema = model.input_schema
    if schema is None or not schema.has_input_names():
        return None
    return dict(zip(schema.input_names(), schema.pandas_types(), strict=True))
