"""Protobuf messages <-> the JSON the REST surface speaks, and their JSON Schemas for /openapi.json.

Field names are the proto names, except where a proto declares an explicit `json_name` (Docker Model
Runner's "Untagged", "from", "context-size"): those are the names its clients read and send. Doubles
(sizes, times) that hold whole numbers render as JSON integers, which DMR's Go clients decode into int64;
a model's `created` is whole seconds.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_SCALAR_SCHEMA = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_INT64: {"type": "string", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_ENUM: {"type": "string"},
}


def _camel(name: str) -> str:
    """protoc's default json_name (upb's camelcase_name follows an explicit json_name instead)."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def json_key(field: FieldDescriptor) -> str:
    """The proto name, or the proto's explicit json_name when it declares one."""
    return field.json_name if field.json_name != _camel(field.name) else field.name


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


# Unix times DMR's Go clients decode as int64: whole seconds.
_WHOLE_SECONDS = frozenset({"modelrunner.v1.Model.created"})


def _shape(value: Any, field: FieldDescriptor) -> Any:
    if field.full_name in _WHOLE_SECONDS:
        return int(value)
    if field.message_type is not None and not _is_map(field):
        if _is_repeated(field):
            return [_shape_message(v, field.message_type) for v in value]
        return _shape_message(value, field.message_type)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if _is_repeated(field):
            return [_whole(v) for v in value]
        return _whole(value)
    return value


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _shape_message(data: dict, descriptor: Descriptor) -> dict:
    out = {}
    for field in descriptor.fields:
        if field.name in data:
            out[json_key(field)] = _shape(data[field.name], field)
    return out


def to_json(message: Message) -> dict:
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _shape_message(data, message.DESCRIPTOR)


def field_json(message: Message, field_name: str) -> Any:
    """One field of a message as JSON (a `response_body`)."""
    return to_json(message)[json_key(message.DESCRIPTOR.fields_by_name[field_name])]


def merge_json(data: dict, message: Message) -> None:
    """Merges JSON (proto or json names) into `message`; raises json_format.ParseError naming the field.
    Unknown fields are ignored: DMR clients send some (e.g. "bearer-token") this API has no use for."""
    json_format.ParseDict(data, message, ignore_unknown_fields=True)


def schema(descriptor: Descriptor, _depth: int = 0) -> dict:
    """A JSON Schema of a message as to_json renders it."""
    properties = {json_key(f): _field_schema(f, _depth) for f in descriptor.fields}
    return {"type": "object", "title": descriptor.name, "properties": properties}


def field_schema(descriptor: Descriptor, field_name: str) -> dict:
    return _field_schema(descriptor.fields_by_name[field_name], 0)


def _field_schema(field: FieldDescriptor, depth: int) -> dict:
    if _is_map(field):
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single_schema(value, depth)}
    single = _single_schema(field, depth)
    return {"type": "array", "items": single} if _is_repeated(field) else single


def _single_schema(field: FieldDescriptor, depth: int) -> dict:
    if field.message_type is not None:
        return schema(field.message_type, depth + 1) if depth < 8 else {"type": "object"}
    return dict(_SCALAR_SCHEMA[field.type])
