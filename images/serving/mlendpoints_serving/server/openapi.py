"""OpenAPI 3 for /score and /invocations, generated from the model signature, with its input example."""

from __future__ import annotations

from typing import Any

from mlendpoints_serving.model import ServedModel

_JSON_TYPES = {
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


def _input_schema(model: ServedModel) -> dict[str, Any]:
    if model.columns is not None:
        cols = model.columns.columns
        row = {"type": "array", "items": {}, "minItems": len(cols), "maxItems": len(cols)}
        return {
            "type": "object",
            "description": "split-orient DataFrame: " + model.columns.describe(),
            "required": ["data"],
            "properties": {
                "columns": {"type": "array", "items": {"type": "string", "enum": [c.name for c in cols]}},
                "index": {"type": "array"},
                "data": {"type": "array", "items": row},
            },
        }
    if model.tensors:
        return {
            "description": "tensor(s): "
            + ", ".join(f"{n or 'input'}: {t.describe()}" for n, t in model.tensors.items())
        }
    return {"description": "any input the model accepts (no signature)"}


def build(model: ServedModel | None, title: str) -> dict[str, Any]:
    example = model.input_example if model is not None else None
    input_schema = _input_schema(model) if model is not None else {}
    score_example: dict[str, Any] | None = None
    if isinstance(example, dict):
        value = next((v for k, v in example.items() if k != "params"), None)
        score_example = {
            "input_data": value,
            **({"params": example["params"]} if "params" in example else {}),
        }
    params_schema: dict[str, Any] = {"type": "object"}
    if model is not None and model.params_schema is not None:
        params_schema["properties"] = {
            p.name: {"type": _JSON_TYPES.get(p.dtype.name, "string"), "default": p.default}
            for p in model.params_schema.params
        }
    responses = {
        "200": {"description": "predictions", "content": {"application/json": {"schema": {}}}},
        "400": _error_response("input does not fit the signature, or malformed JSON"),
        "408": _error_response("request timeout"),
        "413": _error_response("body too large"),
        "415": _error_response("unsupported content type"),
        "500": _error_response("the model raised"),
        "503": _error_response("model not loaded yet"),
    }

    def body(schema: dict[str, Any], ex: Any) -> dict[str, Any]:
        media: dict[str, Any] = {"schema": schema}
        if ex is not None:
            media["example"] = ex
        return {"required": True, "content": {"application/json": media}}

    score_schema = {
        "type": "object",
        "required": ["input_data"],
        "properties": {"input_data": input_schema, "params": params_schema},
    }
    invocations_schema = {
        "type": "object",
        "properties": {
            "dataframe_split": input_schema,
            "dataframe_records": {"type": "array"},
            "instances": {"type": "array"},
            "inputs": {},
            "params": params_schema,
        },
    }
    invocations_body = body(invocations_schema, example)
    invocations_body["content"]["text/csv"] = {"schema": {"type": "string"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1"},
        "paths": {
            "/score": {
                "post": {
                    "summary": "Score (Azure ML contract)",
                    "requestBody": body(score_schema, score_example),
                    "responses": responses,
                }
            },
            "/invocations": {
                "post": {
                    "summary": "Score (mlflow models serve contract)",
                    "requestBody": invocations_body,
                    "responses": responses,
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                }
            }
        },
    }
