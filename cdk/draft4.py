"""Pydantic's JSON schema (draft 2020-12) as the draft-4 subset that API Gateway models accept.

`$ref`s are inlined (API Gateway resolves references only to other models by URL), `const` becomes a
one-value `enum`, numeric `exclusiveMinimum`/`exclusiveMaximum` become draft-4's boolean flags, and the
OpenAPI-only `discriminator` is dropped (`oneOf` alone validates the same), as is `default`. Any other keyword is
refused, so a contract change that needs a newer draft fails the build instead of a deployment.
"""

from __future__ import annotations

from typing import Any

DRAFT4 = "http://json-schema.org/draft-04/schema#"

# Keywords whose value is a schema (or a list of schemas) and must be converted in turn.
_SCHEMA_VALUED = {"items", "additionalProperties", "not"}
_SCHEMA_LISTS = {"anyOf", "oneOf", "allOf"}
# Keywords kept as they are.
_PLAIN = {
    "type",
    "required",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "pattern",
    "format",
    "title",
    "description",
}
# `default` is an annotation API Gateway never applies (and CloudFormation drops its nulls).
_DROPPED = {"discriminator", "default", "$defs", "definitions"}


def to_draft4(schema: dict[str, Any]) -> dict[str, Any]:
    """A self-contained draft-4 schema equivalent to `schema` for validation."""
    definitions: dict[str, Any] = schema.get("$defs", {})
    return {"$schema": DRAFT4, **_convert(schema, definitions, ())}


def _convert(node: dict[str, Any], definitions: dict[str, Any], trail: tuple[str, ...]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        if name not in definitions:
            raise ValueError(f"unresolvable $ref {node['$ref']!r}")
        if name in trail:
            raise ValueError(f"recursive schema through {' -> '.join((*trail, name))}: cannot be inlined")
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return _convert({**definitions[name], **siblings}, definitions, (*trail, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(value, bool):
                out[key] = value
            else:
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(sub, definitions, trail) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:
            out[key] = [_convert(sub, definitions, trail) for sub in value]
        elif key in _SCHEMA_VALUED:
            out[key] = _convert(value, definitions, trail) if isinstance(value, dict) else value
        elif key in _PLAIN:
            out[key] = value
        else:
            raise ValueError(f"JSON-schema keyword {key!r} has no draft-4 equivalent that API Gateway accepts")
    return out
