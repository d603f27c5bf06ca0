"""Open Inference Protocol (V2, KServe's and Triton's REST spec): model metadata and the infer codec.

The codec owns the protocol end to end, so that what the metadata names is what infer
takes and returns:

- inputs: one per DataFrame column (shape `[n]` or `[n, 1]`), or the model's tensor(s);
- outputs: the names of the model's output schema; an unnamed single output (most MLflow
  models) is `predictions`; a DataFrame output is one output per column;
- `outputs` in a request selects outputs (in the order asked); an unknown name is a 400;
- request `parameters` that belong to the protocol (`binary_data_output`, `sequence_*`,
  `priority`, `timeout`, ...) are not model params; the others are MLflow params;
- the binary tensor data extension, both ways: a request whose JSON header is followed by
  raw tensors (`Inference-Header-Content-Length`, inputs with `binary_data_size`), and
  binary outputs when asked (`binary_data_output`, or an output's `binary_data`);
- errors are `{"error": "<message>", "code": "<code>"}` as the protocol's error response.

Metadata is read from the MLmodel file's signature JSON, without importing MLflow.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd

from mlendpoints_serving.model import InputError, ModelInput, ServedModel
from mlendpoints_serving.model.core import Format, dumps
from mlendpoints_serving.server.codecs import (
    JSON,
    ClientError,
    decode_input,
    json_object,
    media_type,
    parse_json,
)

# The compiled decoder of the common request (images/serving/native, built by scripts/native-wheel.sh);
# the Python path is the reference, and decodes every request where it is not installed.
try:
    from mlendpoints_native import V2Columns as _V2Columns
except ImportError:
    _V2Columns = None  # type: ignore[misc,assignment]


HEADER_LENGTH = b"inference-header-content-length"
PREDICTIONS = "predictions"
EXTENSIONS = ["binary_tensor_data"]

# V2 datatype <-> little-endian numpy dtype (BYTES: length-prefixed strings; BF16 has no numpy dtype)
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_KIND = {
    "f": {8: "FP64", 4: "FP32", 2: "FP16"},
    "i": {8: "INT64", 4: "INT32", 2: "INT16", 1: "INT8"},
    "u": {8: "UINT64", 4: "UINT32", 2: "UINT16", 1: "UINT8"},
    "b": {1: "BOOL"},
}
# MLflow column types -> V2 datatypes (array, object, map... have no V2 type: BYTES)
_COLUMN_TYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
# Request parameters the protocol defines (Triton's reserved ones, KServe's content_type):
# never passed to the model as MLflow params.
PROTOCOL_PARAMETERS = frozenset(
    {
        "binary_data_output",
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "priority",
        "timeout",
        "headers",
        "content_type",
    }
)


JSON_TYPE = JSON.encode()
# `"datatype":"FP64","data":` and so on: what follows an output's shape in a JSON reply
_DATATYPE_FIELDS = {name: b',"datatype":"%s","data":' % name.encode() for name in DATATYPES}


def v2_datatype(dtype: np.dtype[Any]) -> str:
    return _BY_KIND.get(dtype.kind, {}).get(dtype.itemsize, "BYTES")


def error_body(code: str, message: str) -> bytes:
    """The protocol's error response, `{"error": <message string>}`, with our code alongside."""
    return orjson.dumps({"error": message, "code": code})


def _specs(signature_json: str | None) -> list[dict[str, Any]]:
    if not signature_json:
        return []
    try:
        specs = json.loads(signature_json)
    except ValueError:
        return []
    return specs if isinstance(specs, list) else []


def tensor_metadata(specs: list[dict[str, Any]], unnamed: str) -> list[dict[str, Any]]:
    """V2 tensor metadata of an MLflow schema (its JSON); `unnamed` names a nameless spec ({i})."""
    out = []
    for i, spec in enumerate(specs):
        name = spec.get("name")
        if spec.get("type") == "tensor":
            tensor = spec.get("tensor-spec") or {}
            try:
                datatype = v2_datatype(np.dtype(tensor.get("dtype")))
            except TypeError:
                datatype = "BYTES"
            out.append(
                {
                    "name": name or unnamed.format(i=i),
                    "datatype": datatype,
                    "shape": list(tensor.get("shape") or [-1]),
                }
            )
        else:
            out.append(
                {
                    "name": name or unnamed.format(i=i),
                    "datatype": _COLUMN_TYPES.get(str(spec.get("type")), "BYTES"),
                    "shape": [-1],
                }
            )
    return out


class Requested(NamedTuple):
    """What the request asked of the reply (a tuple: a frozen dataclass costs ~1 us a request to build)."""

    request_id: Any
    outputs: list[tuple[str, bool]] | None  # (name, binary) in the order asked; None: all outputs
    binary: bool  # binary_data_output: outputs not asked for by name are binary


class V2Codec:
    """POST /v2/models/{name}/infer; also the model metadata, so that both name outputs alike."""

    def __init__(self, model_name: str, *, native: bool = True) -> None:
        """`native`: decode the common request with the compiled decoder when it is installed
        (False: the Python path only, the reference the tests hold the compiled one to)."""
        self.model_name = model_name
        self._use_native = native
        self._model: ServedModel | None = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] = []
        self._output_names: list[str] = []
        # The common reply (see `encode`) up to its output's shape: the same bytes for every reply.
        self._common_prefix = b""
        # The compiled decoder of the common request, for a model of float64 columns (see `decode`).
        self._native: _V2Columns | None = None

    # -- metadata -----------------------------------------------------------------------------
    def _describe(self, model: ServedModel) -> None:
        if self._model is model:
            return
        signature = model.mlmodel.get("signature") or {}
        self._inputs = tensor_metadata(_specs(signature.get("inputs")), "tensor{i}")
        outputs = _specs(signature.get("outputs"))
        # One nameless output is what predict() returns as such: `predictions`, as infer names it.
        self._outputs = tensor_metadata(outputs, PREDICTIONS if len(outputs) == 1 else PREDICTIONS + "_{i}")
        self._output_names = [o["name"] for o in self._outputs]
        name = self._output_names[0] if len(self._output_names) == 1 else PREDICTIONS
        self._common_prefix = b'{"model_name":%s,"outputs":[{"name":%s,"shape":' % (
            orjson.dumps(self.model_name),
            orjson.dumps(name),
        )
        columns, self._native = model.columns, None
        float64_columns = columns is not None and columns.shared_dtype == np.float64
        if self._use_native and _V2Columns is not None and columns is not None and float64_columns:
            self._native = _V2Columns(columns.names, list(DATATYPES))
        self._model = model

    def metadata(self, model: ServedModel) -> dict[str, Any]:
        self._describe(model)
        return {
            "name": self.model_name,
            "versions": [],
            "platform": "mlflow",
            "inputs": self._inputs,
            "outputs": self._outputs,
            # Where the model runs (--device): "cpu" or "cuda:N", and the device's name.
            "parameters": {"device": model.device or "cpu", "device_name": model.device_name},
        }

    def output_names(self, model: ServedModel) -> list[str]:
        self._describe(model)
        return self._output_names

    # -- request ------------------------------------------------------------------------------
    def decode(
        self,
        model: ServedModel,
        body: bytes,
        content_type: str | None,
        headers: list[tuple[bytes, bytes]] | tuple[()] = (),
    ) -> tuple[ModelInput, Requested]:
        header_length = None
        for name, value in headers:
            if name == HEADER_LENGTH:
                header_length = value
            elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                raise ClientError(
                    415,
                    "unsupported_media_type",
                    f"Content-Encoding {value.decode('latin-1')!r} is not supported; send it uncompressed",
                )
        binary = b""
        if header_length is not None:
            # Binary tensor data extension: a JSON header of that length, then the raw tensors.
            if not header_length.isdigit() or int(header_length) > len(body):
                raise ClientError(
                    400,
                    "invalid_request",
                    f"Inference-Header-Content-Length {header_length.decode('latin-1')!r:.40} must be "
                    f"the length of the JSON header, at most the body's {len(body)} bytes",
                )
            size = int(header_length)
            body, binary = body[:size], body[size:]
        else:
            media_type(content_type, (JSON,), missing_as=JSON)
            self._describe(model)
            if self._native is not None and type(body) is bytes:
                # The common request in one compiled pass, or None: any other body (other keys,
                # other values, errors) is the Python path's below, which the native one equals.
                decoded = self._native.decode(body)
                if decoded is not None:
                    values, rows, request_id = decoded
                    block = np.frombuffer(values, np.float64).reshape(-1, rows).T
                    return model.decode(Format.COLUMN_BLOCK, block), Requested(request_id, None, False)
        payload = json_object(parse_json(body), "'inputs'")
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise ClientError(400, "invalid_request", "'inputs' must be a non-empty list of tensors")
        as_column = model.columns is not None
        if model.columns is not None and not binary:
            columns = _json_columns(inputs, model.columns.names)
            if columns is not None:
                requested = self._requested(model, payload)
                params = _model_params(payload.get("parameters"))
                return decode_input(model, Format.COLUMN_LISTS, columns, params), requested
        view, offset = memoryview(binary), 0
        tensors: dict[str, Any] = {}
        for i, t in enumerate(inputs):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise ClientError(
                    400, "invalid_request", f"inputs[{i}] must have 'name', 'shape', 'datatype', 'data'"
                )
            shape = _shape(t, i)
            datatype = _datatype(t, i)
            nbytes = _binary_size(t.get("parameters"), f"inputs[{i}] '{t['name']}'")
            if nbytes is not None:
                if offset + nbytes > len(view):
                    raise ClientError(
                        400,
                        "invalid_request",
                        f"inputs[{i}] '{t['name']}': binary_data_size {nbytes} runs past the body's "
                        f"{len(view)} bytes of binary data (from byte {offset})",
                    )
                flat = _from_binary(view[offset : offset + nbytes], datatype, t["name"], i)
                offset += nbytes
            elif "data" in t:
                flat = _flat_json(t["data"], t["name"], i)
            else:
                raise ClientError(
                    400,
                    "invalid_request",
                    f"inputs[{i}] '{t['name']}' has neither 'data' nor a 'binary_data_size' parameter",
                )
            tensors[t["name"]] = _reshape(flat, shape, t["name"], i, as_column)
        if offset != len(view):
            raise ClientError(
                400,
                "invalid_request",
                f"the body has {len(view) - offset} bytes of binary data that no input's binary_data_size "
                "accounts for",
            )
        requested = self._requested(model, payload)
        params = _model_params(payload.get("parameters"))
        if model.tensors and None in model.tensors:
            if len(tensors) != 1:
                raise InputError(
                    f"the model takes one tensor ({model.tensors[None].describe()}), "
                    f"got {len(tensors)} inputs"
                )
            return decode_input(model, Format.INPUTS, next(iter(tensors.values())), params), requested
        return decode_input(model, Format.INPUTS, tensors, params), requested

    def _requested(self, model: ServedModel, payload: dict[str, Any]) -> Requested:
        parameters = payload.get("parameters")
        binary = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
        outputs = payload.get("outputs")
        if outputs is None:
            return Requested(payload.get("id"), None, binary)
        if not isinstance(outputs, list):
            raise ClientError(400, "invalid_request", "'outputs' must be a list of {'name': ...}")
        known = self.output_names(model)
        selected = []
        for i, out in enumerate(outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise ClientError(400, "invalid_request", f"outputs[{i}] must be an object with a 'name'")
            name, params = out["name"], out.get("parameters") or {}
            if not isinstance(params, dict):
                raise ClientError(
                    400, "invalid_request", f"outputs[{i}] '{name}': 'parameters' must be an object"
                )
            if params.get("classification"):
                raise ClientError(
                    400,
                    "unsupported_extension",
                    f"outputs[{i}] '{name}': the classification extension is not supported "
                    "(supported extensions: binary_tensor_data)",
                )
            if known and name not in known:
                raise ClientError(
                    400,
                    "invalid_request",
                    f"outputs[{i}]: the model has no output '{name}'; its outputs: {known}",
                )
            selected.append((name, bool(params.get("binary_data", binary))))
        return Requested(payload.get("id"), selected, binary)

    # -- reply --------------------------------------------------------------------------------
    def outputs(self, model: ServedModel, predictions: Any) -> dict[str, np.ndarray[Any, Any]]:
        """The model's predictions as named V2 outputs."""
        if isinstance(predictions, pd.DataFrame):
            return {str(c): predictions[c].to_numpy() for c in predictions.columns}
        if isinstance(predictions, dict):
            return {str(k): np.asarray(v) for k, v in predictions.items()}
        values = predictions.to_numpy() if isinstance(predictions, pd.Series) else np.asarray(predictions)
        names = self.output_names(model)
        return {names[0] if len(names) == 1 else PREDICTIONS: values}

    def encode(
        self, model: ServedModel, predictions: Any, requested: Requested
    ) -> tuple[bytes, bytes, int | None]:
        """(content type, body, JSON header length when binary data follows it)."""
        if (
            type(predictions) is np.ndarray
            and predictions.dtype.kind in "fiub"
            and requested.outputs is None
            and not requested.binary
        ):
            # The common reply (one numeric array, JSON, all outputs): the bytes the general path
            # below makes of it, written around the array without building the reply's dicts.
            self._describe(model)
            parts = [
                self._common_prefix,
                orjson.dumps(predictions.shape),
                _DATATYPE_FIELDS[v2_datatype(predictions.dtype)],
                dumps(predictions.ravel()),
                b"}]",
            ]
            if requested.request_id:
                parts += (b',"id":', dumps(requested.request_id))
            parts.append(b"}")
            return JSON_TYPE, b"".join(parts), None
        produced = self.outputs(model, predictions)
        if requested.outputs is None:
            chosen = [(name, requested.binary) for name in produced]
        else:
            missing = [name for name, _ in requested.outputs if name not in produced]
            if missing:
                raise ClientError(
                    400,
                    "invalid_request",
                    f"the model produced no output {missing}; it produced {list(produced)}",
                )
            chosen = requested.outputs
        outputs, chunks = [], []
        for name, binary in chosen:
            arr = produced[name]
            datatype = v2_datatype(arr.dtype)
            out: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
            if binary:
                raw = _to_binary(arr, datatype)
                out["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                out["data"] = arr.ravel() if arr.dtype.kind in "fiub" else arr.ravel().tolist()
            outputs.append(out)
        reply: dict[str, Any] = {"model_name": self.model_name, "outputs": outputs}
        if requested.request_id:
            reply["id"] = requested.request_id
        header = dumps(reply)
        if not chunks:
            return JSON_TYPE, header, None
        return b"application/octet-stream", b"".join([header, *chunks]), len(header)


def _json_columns(inputs: list[Any], names: list[str]) -> list[list[Any]] | None:
    """The data of inputs that are exactly the signature's columns as plain JSON, in signature
    order, in one pass: what the loop over inputs in `V2Codec.decode` and then
    `ColumnDecoder.from_columns` make of them, at a fraction of the cost (a DataFrame model's
    request has an input per column). Each: exactly `name` (the signature's, in its place),
    `shape` ([n] or [n, 1], the same for all), a known `datatype` and `data` (a flat list of n
    values); no `parameters`. None when any is not: the general path then checks each and
    names what is wrong."""
    if len(inputs) != len(names):
        return None
    columns = []
    try:  # a KeyError or TypeError: an input is not an object, or lacks a key
        first = inputs[0]
        rows = len(first["data"])
        shape = first["shape"]
        if shape != [rows] and shape != [rows, 1]:
            return None
        for t, want in zip(inputs, names, strict=True):
            # Four keys, all read: exactly these four (`parameters`, binary data, is the general path's).
            if len(t) != 4 or t["name"] != want or t["shape"] != shape or t["datatype"] not in DATATYPES:
                return None
            data = t["data"]
            # The equalities above take `true` or 1.0 for 1: the general path refuses a size that is
            # not an int, so each size's type is checked too (the first and, for [n, 1], the last).
            size = t["shape"]
            if type(data) is not list or len(data) != rows:
                return None
            if type(size[0]) is not int or type(size[-1]) is not int:
                return None
            if rows and type(data[0]) is list:
                return None
            columns.append(data)
    except (KeyError, TypeError):
        return None
    return columns


def _shape(tensor: dict[str, Any], i: int) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise InputError(
            f"inputs[{i}] '{tensor['name']}': 'shape' must be a list of sizes, got {shape!r:.60}"
        )
    return shape


def _datatype(tensor: dict[str, Any], i: int) -> str:
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise InputError(
            f"inputs[{i}] '{tensor['name']}': 'datatype' must be one of {sorted(DATATYPES)}, "
            f"got {datatype!r:.40}"
        )
    return str(datatype)


def _binary_size(parameters: Any, what: str) -> int | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise ClientError(400, "invalid_request", f"{what}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise ClientError(
            400, "invalid_request", f"{what}: binary_data_size must be a byte count, got {size!r:.40}"
        )
    return size


def _flat_json(data: Any, name: str, i: int) -> list[Any]:
    if not isinstance(data, list):
        raise InputError(f"inputs[{i}] '{name}': 'data' must be a list")
    if data and isinstance(data[0], list):
        return np.asarray(data, dtype=object).ravel().tolist()  # row-major nested lists
    return data


def _from_binary(raw: memoryview, datatype: str, name: str, i: int) -> Any:
    """One input's raw bytes as the binary tensor data extension lays them out."""
    if datatype == "BYTES":
        items, pos, end = [], 0, len(raw)
        while pos < end:
            if pos + 4 > end:
                raise InputError(f"inputs[{i}] '{name}': BYTES data ends inside an element's 4-byte length")
            n = int.from_bytes(raw[pos : pos + 4], "little")
            if pos + 4 + n > end:
                raise InputError(f"inputs[{i}] '{name}': a BYTES element of {n} bytes runs past the data")
            item = bytes(raw[pos + 4 : pos + 4 + n])
            try:
                items.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                raise InputError(
                    f"inputs[{i}] '{name}': BYTES element {len(items)} is not UTF-8 text"
                ) from None
            pos += 4 + n
        return items
    dtype = DATATYPES[datatype]
    if len(raw) % dtype.itemsize:
        raise InputError(
            f"inputs[{i}] '{name}': {len(raw)} bytes of {datatype} is not a whole number of "
            f"{dtype.itemsize}-byte values"
        )
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)


def _reshape(flat: Any, shape: list[int], name: str, i: int, as_column: bool) -> Any:
    count = math.prod(shape)  # not np.prod: a numpy reduction costs ~5 us, per input of every request
    if len(flat) != count:
        raise InputError(f"inputs[{i}] '{name}': shape {shape} needs {count} values, got {len(flat)}")
    if isinstance(flat, np.ndarray):
        # binary data: the decoders take JSON-like lists for columns, arrays for tensors
        return flat.tolist() if as_column else flat.reshape(shape)
    if as_column and (len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1)):
        return flat  # one column of a DataFrame model
    return np.asarray(flat, dtype=object).reshape(shape).tolist()


def _model_params(parameters: Any) -> Any:
    """The request's parameters less the protocol's own: what the model gets as MLflow params."""
    if not isinstance(parameters, dict):
        return parameters  # None, or not an object: the core refuses it (invalid_params)
    params = {k: v for k, v in parameters.items() if k not in PROTOCOL_PARAMETERS}
    return params or None


def _to_binary(arr: np.ndarray[Any, Any], datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()
    parts = []
    for v in arr.ravel().tolist():
        raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(len(raw).to_bytes(4, "little"))
        parts.append(raw)
    return b"".join(parts)
