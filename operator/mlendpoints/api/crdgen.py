"""Generates the CRDs from the pydantic models: `python -m mlendpoints.api.crdgen OUTDIR [OUTDIR...]`.

Pydantic's JSON schema is turned into a Kubernetes structural schema: `$ref`s
inlined, `Optional` unwrapped, titles dropped, int-or-string and
preserve-unknown-fields markers kept, `additionalProperties: false` removed
(the API server prunes unknown fields instead).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from mlendpoints.api.common import API_GROUP, API_VERSION
from mlendpoints.api.kinds import CATEGORY, KINDS, Kind

# JSON-schema keywords a structural schema does not take.
_DROPPED = {"title", "examples", "$defs"}


def _is_null(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null"


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    if "$ref" in schema:
        target = defs[schema.pop("$ref").rsplit("/", 1)[-1]]
        schema = {**target, **schema}  # the field's own description and default win over the model's
    if "allOf" in schema and len(schema["allOf"]) == 1:
        schema = {**schema.pop("allOf")[0], **schema}
        return _structural(schema, defs)
    if schema.get("x-kubernetes-int-or-string"):
        return {k: v for k, v in schema.items() if k not in ("anyOf", "type", *_DROPPED)}
    if "anyOf" in schema:
        options = [o for o in schema.pop("anyOf") if not _is_null(o)]
        if len(options) != 1:
            raise ValueError(f"no structural form for a union of {options}")
        schema = {**_structural(options[0], defs), **schema}
        if schema.get("default", ...) is None:
            del schema["default"]
        return _structural(schema, defs)
    if "$ref" in schema:
        return _structural(schema, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "additionalProperties":
            if isinstance(value, dict) and "properties" not in schema:
                out[key] = _structural(value, defs)
        elif key == "items":
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = "object"
        out.pop("properties", None)
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if not out.get("required", True):
        del out["required"]
    if out.get("default") == "":  # Kubernetes 1.20 reads an empty-string default as null and refuses it
        del out["default"]
    return out


def openapi_schema(kind: Kind) -> dict[str, Any]:
    """The CRD's openAPIV3Schema for one kind."""
    raw = kind.model.model_json_schema(mode="validation")
    defs = raw.get("$defs", {})
    schema = _structural(raw, defs)
    props = schema["properties"]
    props["metadata"] = {"type": "object"}  # the API server allows nothing more here
    # The API server sets these; a CRD schema must not require or constrain them.
    schema["required"] = [
        r for r in schema.get("required", []) if r not in ("apiVersion", "kind", "metadata")
    ]
    if not schema["required"]:
        del schema["required"]
    return schema


def crd(kind: Kind) -> dict[str, Any]:
    columns = []
    for col in kind.columns:
        entry: dict[str, Any] = {"name": col.name, "type": col.type, "jsonPath": col.json_path}
        if col.description:
            entry["description"] = col.description
        if col.priority:
            entry["priority"] = col.priority
        columns.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "mlendpoints"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


# kopf's peering resources (not ours, no model): replicas of the operator find each other in a
# peering object, and the one with the highest priority is the active one. A cluster-wide operator
# peers in a ClusterKopfPeering; one watching a list of namespaces (the chart's `watchNamespaces`)
# peers in a KopfPeering in each of them.
def peering_crd(scope: str) -> dict[str, Any]:
    kind = "ClusterKopfPeering" if scope == "Cluster" else "KopfPeering"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.lower()}s.kopf.dev",
            "labels": {"app.kubernetes.io/part-of": "mlendpoints"},
        },
        "spec": {
            "scope": scope,
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": f"{kind.lower()}s", "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


PEERING_CRD = peering_crd("Cluster")


def file_name(kind: Kind) -> str:
    return f"{API_GROUP}_{kind.plural}.yaml"


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    header = "# Generated by `make crds` (python -m mlendpoints.api.crdgen); do not edit.\n"
    files = {file_name(kind): crd(kind) for kind in KINDS}
    files["kopf.dev_clusterkopfpeerings.yaml"] = PEERING_CRD
    files["kopf.dev_kopfpeerings.yaml"] = peering_crd("Namespaced")
    return {name: header + yaml.safe_dump(doc, sort_keys=False, width=120) for name, doc in files.items()}


def main(argv: list[str] | None = None) -> int:
    outdirs = sys.argv[1:] if argv is None else argv
    if not outdirs:
        print("usage: python -m mlendpoints.api.crdgen OUTDIR [OUTDIR...]", file=sys.stderr)
        return 2
    files = render_all()
    for outdir in map(Path, outdirs):
        outdir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (outdir / name).write_text(text)
        print(f"crdgen: wrote {len(files)} CRDs to {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
