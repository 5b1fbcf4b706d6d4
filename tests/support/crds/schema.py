"""Checks an object against a stored, trimmed openAPIV3Schema (see trim.py): what the API server would
refuse or silently drop from a custom resource, offline. Required fields, unknown fields (a structural
schema prunes them, so a typo would vanish without an error), types, enums, bounds and patterns."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float),
}


def load(name: str) -> dict[str, Any]:
    """A stored document of this folder: {apiVersion, kind, schema} for a CRD, or a hand-written one."""
    return yaml.safe_load((HERE / name).read_text())


def violations(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every way `value` breaks `schema`, each as 'path: why'; empty when it conforms."""
    where = path or "<root>"
    if schema.get("x-trimmed"):
        return [f"{where}: defined by the CRD, but its schema is not stored (trim.py --prune): cannot check it"]
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return [f"{where}: {value!r} is neither an integer nor a string"]
    elif kind is not None:
        if isinstance(value, bool) != (kind == "boolean") or not isinstance(value, _TYPES[kind]):
            return [f"{where}: {value!r} is not of type {kind}"]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        found += _string(value, schema, where)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{where}: {value} > maximum {schema['maximum']}")
    if isinstance(value, list):
        found += _bounds(len(value), schema, "Items", where)
        for i, item in enumerate(value):
            found += violations(item, schema.get("items", {}), f"{path}[{i}]")
    if isinstance(value, dict):
        found += _object(value, schema, path)
    return found


def _string(value: str, schema: dict[str, Any], where: str) -> list[str]:
    found = _bounds(len(value), schema, "Length", where)
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    return found


def _bounds(size: int, schema: dict[str, Any], noun: str, where: str) -> list[str]:
    found = []
    if f"min{noun}" in schema and size < schema[f"min{noun}"]:
        found.append(f"{where}: {size} < min{noun} {schema[f'min{noun}']}")
    if f"max{noun}" in schema and size > schema[f"max{noun}"]:
        found.append(f"{where}: {size} > max{noun} {schema[f'max{noun}']}")
    return found


def _object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    where = path or "<root>"
    found = _bounds(len(value), schema, "Properties", where)
    found += [f"{where}: required field {name!r} missing" for name in schema.get("required", []) if name not in value]
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    for name, item in value.items():
        child = f"{path}.{name}".lstrip(".")
        if properties is not None and name in properties:
            found += violations(item, properties[name], child)
        elif isinstance(extra, dict):
            found += violations(item, extra, child)
        elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            found.append(f"{child}: unknown field (the schema defines {sorted(properties)})")
    return found
