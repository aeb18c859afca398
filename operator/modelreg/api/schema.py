"""Turn pydantic JSON Schema into a Kubernetes structural schema.

Called by `api.crds` only. pydantic's output differs from what the API server
accepts in a few deliberate ways handled here: `$ref`s are inlined, `Optional`
becomes the plain type (the API server prunes nulls of non-nullable fields,
and the operator omits unset fields), int-or-string unions become the
`x-kubernetes-int-or-string` marker, and titles and defaults are dropped
(defaults would make the API server write fields the user's Git does not hold).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from modelreg.api.quantities import INT_OR_STRING_MARK

_KEEP = {
    "type", "description", "properties", "required", "items", "additionalProperties", "enum", "format",
    "pattern", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems", "minProperties",
    "maxProperties", "exclusiveMinimum", "exclusiveMaximum",
}  # fmt: skip
_K8S_FORMATS = {"date-time", "int32", "int64", "byte", "date", "duration", "uri", "uuid"}

Schema = dict[str, Any]


def structural_schema(model: type[BaseModel]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


def _convert(node: Schema, defs: dict[str, Schema]) -> Schema:
    node = _resolve(node, defs)
    out: Schema = {}
    if node.get(INT_OR_STRING_MARK):  # no type; only checks that apply to the string form
        out[INT_OR_STRING_MARK] = True
        for key, value in node.items():
            if key in ("description", "pattern", "maxLength") or key.startswith("x-kubernetes-validations"):
                out[key] = value
        return out
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "format" and value not in _K8S_FORMATS:
            continue
        elif key == "description":  # docstrings wrap; a description is one paragraph
            out[key] = " ".join(value.split())
        elif key in _KEEP:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out:
        out["type"] = "object"
    if out.get("type") == "integer" and "format" not in out:
        out["format"] = "int64"
    return out


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline `$ref`, and collapse `anyOf [X, null]` to X, keeping sibling keys."""
    siblings = {k: v for k, v in node.items() if k not in ("$ref", "anyOf", "allOf")}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _resolve({**target, **siblings}, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        return _resolve({**node["allOf"][0], **siblings}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) == 1:
            return _resolve({**options[0], **siblings}, defs)
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            return {**siblings, INT_OR_STRING_MARK: True}
        raise ValueError(f"unsupported union in CRD schema: {node['anyOf']}")
    return node
