"""OpenAPI 3 of what this deployment serves, generated from the model signature (or the scoring script).

The document is the contract: a request it calls valid is one the server accepts, and
one it calls invalid is refused with a 4xx (tests/integration/test_server_openapi.py
holds the server to it with schemathesis). So the schemas are as exact as the signature
allows:

- columns: every accepted shape of `input_data` (split DataFrame, rows, records, named
  columns) as an `anyOf`, each column typed, at least one row (no rows: a 400);
- tensors: nested arrays, fixed dimensions sized, at least one row;
- CSV: a header naming the signature's columns in order, then rows of values.

Where JSON Schema cannot say what the server checks (columns of mixed types in a
reordered split frame, ragged `-1` dimensions, a model that cannot take null), the
document says it in the description. A scoring-script deployment serves only
`/score`: its document comes from the script's inference-schema decorators when
present, else it takes any JSON.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from mlendpoints_serving.model import ServedModel
from mlendpoints_serving.model.schema import ColumnSpec, TensorDecoder

log = logging.getLogger("mlendpoints.serve")

_INT_RANGES = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
_PARAM_TYPES = {
    "double": "number",
    "float": "number",
    "long": "integer",
    "integer": "integer",
    "boolean": "boolean",
    "string": "string",
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _value(spec: ColumnSpec) -> dict[str, Any]:
    if spec.type in ("double", "float"):
        return {"type": "number"}
    if spec.type in _INT_RANGES:
        low, high = _INT_RANGES[spec.type]
        return {"type": "integer", "minimum": low, "maximum": high}
    return {"type": "boolean" if spec.type == "boolean" else "string"}


def _column_schemas(model: ServedModel) -> dict[str, dict[str, Any]]:
    """The shapes a column signature's input takes, by name."""
    assert model.columns is not None
    cols = model.columns.columns
    names = [c.name for c in cols]
    n = len(cols)
    uniform = len({c.type for c in cols}) == 1
    if uniform:
        row_items: dict[str, Any] = _value(cols[0])
        # any order of the signature's columns: a row's values are all of one type
        columns: dict[str, Any] = {
            "type": "array",
            "items": {"type": "string", "enum": names},
            "minItems": n,
            "maxItems": n,
            "uniqueItems": True,
        }
    else:
        row_items = {"anyOf": [_value(c) for c in cols]}
        columns = {"type": "array", "items": {"type": "string"}, "enum": [names]}
    row = {"type": "array", "items": row_items, "minItems": n, "maxItems": n}
    typed = {c.name: _value(c) for c in cols}
    described = model.columns.describe()
    split = {
        "type": "object",
        "description": f"a split DataFrame: `columns` (none: signature order) and rows [{described}]",
        "required": ["data"],
        "properties": {
            "columns": {**columns, "nullable": True},
            "index": {"description": "ignored"},
            "data": {"type": "array", "items": row, "minItems": 1},
        },
    }
    rows = {
        "type": "array",
        "description": f"rows in signature order [{described}]",
        "items": row,
        "minItems": 1,
    }
    records = {
        "type": "array",
        "description": "records: one object per row; other keys are ignored",
        "items": {"type": "object", "required": names, "properties": typed},
        "minItems": 1,
    }
    named = {
        "type": "object",
        "description": "named columns: a value or a one-value list per column; other keys are ignored",
        "required": names,
        "properties": {
            c.name: {
                "anyOf": [_value(c), {"type": "array", "items": _value(c), "minItems": 1, "maxItems": 1}]
            }
            for c in cols
        },
    }
    return {"split": split, "rows": rows, "records": records, "named": named}


def _tensor(spec: TensorDecoder) -> dict[str, Any]:
    kind = spec.dtype.kind
    leaf: dict[str, Any] = (
        {"type": "number"}
        if kind == "f"
        else {"type": "integer"}
        if kind in "iu"
        else {"type": "boolean"}
        if kind == "b"
        else {"type": "string"}
    )
    schema = leaf
    for depth, size in reversed(list(enumerate(spec.shape))):
        schema = {"type": "array", "items": schema}
        if size >= 0:
            schema["minItems"] = schema["maxItems"] = size
        elif depth == 0:
            schema["minItems"] = 1
    schema["description"] = f"{spec.label}: {spec.describe()}; -1 dimensions are any size, not ragged"
    return schema


def _csv(model: ServedModel) -> dict[str, Any] | None:
    """A CSV body as a pattern: the header in signature order, then rows of numbers (numeric columns).

    None where no pattern says which CSV the server takes (other signatures): the document then
    leaves CSV out rather than promise what it cannot hold; the server still takes it.
    """
    cols = model.columns.columns if model.columns is not None else []
    if not cols or any(c.type not in ("double", "float") for c in cols):
        return None
    number = r"-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,8})?"
    row = ",".join([number] * len(cols))
    header = ",".join(c.name for c in cols)
    return {
        "type": "string",
        "description": "CSV: a header row naming the signature's columns, then at least one row",
        "pattern": f"^{header}(\\n{row})+\\n?$",
    }


def _params(model: ServedModel) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "nullable": True}
    if model.params_schema is not None:
        schema["properties"] = {
            p.name: {"type": _PARAM_TYPES.get(p.dtype.name, "string"), "default": p.default}
            for p in model.params_schema.params
        }
        schema["description"] = "MLflow params (the signature's params schema)"
    else:
        schema["description"] = "MLflow params; this model has no params schema, so they are ignored"
    return schema


def _body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


def _responses(ok: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "predictions", "content": {"application/json": {"schema": ok}}}
    }
    out.update({status: _error_response(text) for status, text in errors.items()})
    return out


_SCORING_ERRORS = {
    "400": "input does not fit the signature, malformed JSON, or input the model cannot take",
    "408": "request timeout",
    "413": "body too large",
    "415": "unsupported content type",
    "500": "the model raised",
    "503": "model not loaded yet",
}


def build(model: ServedModel | None, title: str, script: ModuleType | None = None) -> dict[str, Any]:
    if script is not None:
        paths = {"/score": {"post": _script_operation(script), "get": _script_get_operation(script)}}
    elif model is not None:
        paths = _model_paths(model)
    else:
        paths = {}
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                }
            }
        },
    }


def _model_paths(model: ServedModel) -> dict[str, Any]:
    example = model.input_example
    score_example: dict[str, Any] | None = None
    if isinstance(example, dict):
        value = next((v for k, v in example.items() if k != "params"), None)
        score_example = {
            "input_data": value,
            **({"params": example["params"]} if "params" in example else {}),
        }
    params = _params(model)
    frames: dict[str, Any]
    if model.columns is not None:
        shapes = _column_schemas(model)
        score_input: dict[str, Any] = {
            "anyOf": [shapes["split"], shapes["rows"], shapes["records"], shapes["named"]]
        }
        frames = {
            "dataframe_split": dict(shapes["split"]),  # extra keys ignored here
            "dataframe_records": shapes["records"],
            "instances": {"anyOf": [shapes["rows"], shapes["records"], shapes["named"]]},
            "inputs": {"anyOf": [shapes["rows"], shapes["records"], shapes["named"]]},
        }
        # /score: an object of only columns/index/data is a split frame, anything else named columns
        shapes["split"]["additionalProperties"] = False
    elif model.tensors:
        if None in model.tensors:
            tensor = _tensor(model.tensors[None])
        else:
            tensor = {
                "type": "object",
                "required": [n for n in model.tensors if n is not None],
                "properties": {n: _tensor(t) for n, t in model.tensors.items() if n is not None},
            }
        score_input = tensor
        frames = {"instances": tensor, "inputs": tensor}
    else:
        score_input = {"description": "any input the model accepts (no signature)"}
        frames = {key: {} for key in ("dataframe_split", "dataframe_records", "instances", "inputs")}
    score = {
        "type": "object",
        "required": ["input_data"],
        "properties": {"input_data": score_input, "params": params},
    }
    invocations: dict[str, Any] = {
        "type": "object",
        "description": "exactly one of " + ", ".join(frames),
        "properties": {**frames, "params": params},
        "oneOf": [{"required": [key]} for key in frames],
    }
    invocations_body = _body(invocations, example)
    csv = _csv(model)
    if csv is not None:
        invocations_body["content"]["text/csv"] = {"schema": csv}
    else:
        invocations["description"] += "; or a text/csv body with a header row (not described here)"
    return {
        "/score": {
            "post": {
                "summary": "Score (Azure ML contract)",
                "requestBody": _body(score, score_example),
                "responses": _responses({"type": "array"}, _SCORING_ERRORS),
            }
        },
        "/invocations": {
            "post": {
                "summary": "Score (mlflow models serve contract)",
                "requestBody": invocations_body,
                "responses": _responses(
                    {"type": "object", "required": ["predictions"], "properties": {"predictions": {}}},
                    _SCORING_ERRORS,
                ),
            }
        },
    }


def _script_operation(script: ModuleType) -> dict[str, Any]:
    """POST /score of a scoring script: its inference-schema decorators' swagger, else any JSON."""
    request, response = _decorated_schemas(script)
    return {
        "summary": "Score (the deployment's scoring script: run(raw_body))",
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": _responses(
            response,
            {
                "400": "no body, or the body is not UTF-8 (a decorated run(): not a JSON object, or one"
                " without a parameter run() has no default for)",
                "408": "request timeout",
                "413": "body too large",
                "415": "a decorated run() (@input_schema) is sent a body that is not application/json",
                "500": "the script's run() raised",
                "503": "init() has not returned yet",
            },
        ),
    }


def _script_get_operation(script: ModuleType) -> dict[str, Any]:
    """GET /score of a scoring script, as azmlinfsrv serves it: the query parameters, each JSON-decoded
    when it can be, as one JSON object given to run()."""
    _, response = _decorated_schemas(script)
    return {
        "summary": "Score with query parameters (run() gets them as a JSON object)",
        "parameters": [
            {
                "name": "query",
                "in": "query",
                "required": False,
                "description": "any query parameters; each value is JSON-decoded when it can be,"
                " else kept as text; a repeated one becomes a list",
                "style": "form",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": True},
            }
        ],
        "responses": _responses(
            response,
            {
                "400": "the query string is not UTF-8",
                "408": "request timeout",
                "500": "the script's run() raised",
                "503": "init() has not returned yet",
            },
        ),
    }


def _decorated_schemas(script: ModuleType) -> tuple[dict[str, Any], dict[str, Any]]:
    try:  # Azure's inference-schema package, when the image has it and run() is decorated
        from inference_schema.schema_util import (
            get_input_schema,
            get_output_schema,
            is_schema_decorated,
        )
    except ImportError:
        return {}, {}
    try:
        if is_schema_decorated(script.run):
            request = dict(get_input_schema(script.run) or {})
            # The server refuses a body without a parameter run() has no default for (azmlinfsrv's
            # "A value is not provided"), which inference-schema's document does not say.
            required = [
                param.name
                for param in inspect.signature(script.run).parameters.values()
                if param.default is inspect.Parameter.empty and param.name != "request_headers"
            ]
            if required and request.get("type") == "object":
                request["required"] = required
            # inference-schema lists request_headers in its example; the server fills it from the headers.
            for key in ("properties", "example"):
                if isinstance(request.get(key), dict) and "request_headers" in request[key]:
                    request[key] = {k: v for k, v in request[key].items() if k != "request_headers"}
            return request, get_output_schema(script.run) or {}
    except Exception:
        log.warning("cannot read the scoring script's inference-schema decorators", exc_info=True)
    return {}, {}


# --- /swagger.json?version=: azmlinfsrv's versions -------------------------------------------------
# Version aliases azmlinfsrv answers, and the version each names. Without `version` azmlinfsrv serves
# Swagger 2; this server serves its OpenAPI 3 document (a superset: every route, exact schemas).
SWAGGER_ALIASES = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
_INFERENCE_SCHEMA_VERSIONS = {"2": "2.0", "3": "3.0", "3.1": "3.1"}
_ANY_OBJECT = {"type": "object", "example": {}}  # azmlinfsrv's schemas for an undecorated run()


class SwaggerUnavailable(Exception):
    """A `?version=` this server has no document for; the message is azmlinfsrv's wording."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _user_swagger(script: ModuleType, version: str) -> dict[str, Any] | None:
    """A swagger file the user put beside the script (azmlinfsrv: swagger<version>.json, and
    swagger.json for version 2), served as it is."""
    folder = Path(getattr(script, "__file__", "") or ".").parent
    names = [f"swagger{version}.json"] + (["swagger.json"] if version == "2" else [])
    for name in names:
        try:
            return dict(json.loads((folder / name).read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue
    return None


def _supported(script: ModuleType | None) -> list[str]:
    """The versions this server has a document for: a decorated run() may rule some out (Swagger 2 has
    no multi-type arrays), as azmlinfsrv asks inference-schema."""
    if script is None:
        return ["3", "3.1"]  # the MLflow model server: OpenAPI 3 only
    try:
        from inference_schema.schema_util import get_supported_versions, is_schema_decorated
    except ImportError:
        return ["2", "3", "3.1"]
    if not is_schema_decorated(script.run):
        return ["2", "3", "3.1"]
    allowed = set(get_supported_versions(script.run))
    versions = [v for v, name in _INFERENCE_SCHEMA_VERSIONS.items() if name in allowed]
    return sorted({*versions, *(v for v in ("2", "3", "3.1") if _user_swagger(script, v) is not None)})


def swagger2(script: ModuleType, title: str) -> dict[str, Any]:
    """The Swagger 2.0 document azmlinfsrv generates for a scoring script: health, score, swagger."""
    request, response = _decorated_schemas(script)
    error = {"description": "The service failed to execute due to an error.", "schema": _ref("ErrorResponse")}
    return {
        "swagger": "2.0",
        "info": {"title": title, "description": f"API specification for {title}", "version": "1"},
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "Bearer": {
                "type": "apiKey",
                "name": "Authorization",
                "in": "header",
                "description": "For example: Bearer abc123",
            }
        },
        "paths": {
            "/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given "
                    "point.",
                    "responses": {
                        "200": {
                            "description": "If service is up and running, this response will be returned "
                            "with the content 'Healthy'",
                            "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"},
                        },
                        "default": error,
                    },
                }
            },
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run web service's model and get the prediction output",
                    "security": [{"Bearer": []}],
                    "parameters": [
                        {
                            "name": "serviceInputPayload",
                            "in": "body",
                            "description": "The input payload for executing the real-time machine learning "
                            "service.",
                            "schema": _ref("ServiceInput"),
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The service processed the input correctly and provided a result "
                            "prediction, if applicable.",
                            "schema": _ref("ServiceOutput"),
                        },
                        "default": error,
                    },
                }
            },
            "/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "type": "integer",
                            "enum": [2, 3],
                        }
                    ],
                    "responses": {
                        "200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                        "default": error,
                    },
                }
            },
        },
        "definitions": {
            "ServiceInput": request or _ANY_OBJECT,
            "ServiceOutput": response or _ANY_OBJECT,
            "ErrorResponse": {"type": "object", "properties": {"message": {"type": "string"}}},
        },
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def document(
    model: ServedModel | None, title: str, script: ModuleType | None, alias: str | None
) -> dict[str, Any]:
    """/swagger.json?version=<alias>: no version, 3 or 3.0 is this server's OpenAPI 3 document; 3.1 the
    same, marked 3.1.0 (azmlinfsrv's 3.1 is its 3 so marked); 2 or 2.0, for a scoring script, Swagger
    2 as azmlinfsrv builds it; a file the user put beside the script wins, as under azmlinfsrv."""
    version = SWAGGER_ALIASES.get("3" if alias is None else alias)
    supported = _supported(script)
    if version is None:
        raise SwaggerUnavailable(
            f"Swagger version [{alias}] is not valid. Supported versions: [{', '.join(supported)}]."
        )
    if version not in supported:
        raise SwaggerUnavailable(
            f"Swagger version [{alias}] is not supported for the scoring script. "
            f"Supported swagger versions: [{', '.join(supported)}]."
            if script is not None
            else f"Swagger version [{alias}] is not served for an MLflow model. "
            f"Supported swagger versions: [{', '.join(supported)}]."
        )
    if script is not None and alias is not None and (own := _user_swagger(script, version)) is not None:
        return own
    if version == "2":
        assert script is not None  # _supported: an MLflow model server has no Swagger 2
        return swagger2(script, title)
    spec = build(model, title, script)
    if version == "3.1":
        spec["openapi"] = "3.1.0"
    return spec
