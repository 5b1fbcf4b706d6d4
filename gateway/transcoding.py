"""A route table read from the services' `google.api.http` annotations (grpc-gateway style), the same
descriptors Envoy's grpc_json_transcoder reads, and the generic HTTP -> gRPC request mapping.

A route's request message takes its fields from the path template's variables, then the body (`body:
"*"` = the whole JSON body), then the query string for any field neither of those filled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from modelrunner.gateway import proto_json
from modelrunner.gateway.errors import APIError

_VARIABLE = re.compile(r"\{([A-Za-z_][\w.]*)(?:=([^}]*))?\}")
_VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class HttpRoute:
    http_method: str  # "GET"
    template: str  # "/models/{name=**}/tag", as annotated
    path: str  # "/models/{name:path}/tag", as Starlette matches it
    variables: tuple[str, ...]  # fields filled from the path
    body: str  # "", "*" or a field name
    response_body: str  # "" or the field answered instead of the whole message
    method: MethodDescriptor

    @property
    def service(self) -> str:
        return self.method.containing_service.full_name

    @property
    def server_streaming(self) -> bool:
        return self.method.server_streaming

    def input_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def literal(self) -> bool:
        return not self.variables


def _starlette_path(template: str) -> tuple[str, tuple[str, ...]]:
    names: list[str] = []

    def replace(match: re.Match) -> str:
        name, pattern = match.group(1), match.group(2) or "*"
        names.append(name)
        return f"{{{name}:path}}" if "**" in pattern or "/" in pattern else f"{{{name}}}"

    return _VARIABLE.sub(replace, template), tuple(names)


def routes_of(services: list[ServiceDescriptor]) -> list[HttpRoute]:
    """Every annotated method of `services`, literal paths before templated ones (so /models/purge is not
    taken for a model named "purge")."""
    routes = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb not in _VERBS:
                continue
            template = getattr(rule, verb)
            path, variables = _starlette_path(template)
            routes.append(HttpRoute(verb.upper(), template, path, variables, rule.body, rule.response_body, method))
    return sorted(routes, key=lambda r: not r.literal)


def _query_value(field: FieldDescriptor, text: str):
    try:
        if field.type == FieldDescriptor.TYPE_BOOL:
            if text.lower() in ("true", "1", ""):
                return True
            if text.lower() in ("false", "0"):
                return False
            raise ValueError(text)
        if field.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32):
            return int(text)
        if field.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
            return str(int(text))
        if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
            return float(text)
    except ValueError:
        raise APIError(400, f"{field.name}: {text!r} is not a valid {_type_name(field)}", param=field.name) from None
    return text


def _type_name(field: FieldDescriptor) -> str:
    return "boolean" if field.type == FieldDescriptor.TYPE_BOOL else "number"


def build_request(route: HttpRoute, path_params: dict[str, str], query: list[tuple[str, str]], body) -> Message:
    """The gRPC request of an HTTP request; a field of the wrong type is a 400 naming it."""
    message = route.input_class()()
    descriptor = message.DESCRIPTOR
    try:
        if route.body == "*":
            if not isinstance(body, dict):
                raise APIError(400, "the request body must be a JSON object", code="invalid_json")
            proto_json.merge_json(body, message)
        elif route.body:
            proto_json.merge_json({route.body: body}, message)
        filled = set(route.variables) | ({f.name for f in descriptor.fields} if route.body == "*" else {route.body})
        from_query: dict = {}
        for key, text in query:
            field = descriptor.fields_by_name.get(key)
            if field is None or field.name in filled or field.message_type is not None:
                continue
            value = _query_value(field, text)
            if field.is_repeated:
                from_query.setdefault(key, []).append(value)
            else:
                from_query[key] = value
        proto_json.merge_json(from_query, message)
    except json_format.ParseError as exc:
        raise APIError(400, f"invalid request: {exc}", code="invalid_value") from None
    for name in route.variables:
        setattr(message, name, path_params[name])
    return message


def openapi_operation(route: HttpRoute) -> dict:
    """What /openapi.json says of a route: its parameters, body and answer, from the descriptors."""
    descriptor = route.method.input_type
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in route.variables
    ]
    if route.body != "*":
        for field in descriptor.fields:
            if field.name in route.variables or field.name == route.body or field.message_type is not None:
                continue
            parameters.append({"name": field.name, "in": "query", "required": False,
                               "schema": proto_json.field_schema(descriptor, field.name)})
    operation: dict = {"parameters": parameters}
    if route.body == "*":
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": proto_json.schema(descriptor)}},
        }
    output = route.method.output_type
    answer = proto_json.field_schema(output, route.response_body) if route.response_body else proto_json.schema(output)
    media = "application/x-ndjson" if route.server_streaming else "application/json"
    operation["description"] = f"gRPC {route.service}.{route.method.name} (`{route.http_method} {route.template}`)"
    operation["x-grpc-method"] = f"{route.service}/{route.method.name}"
    operation["responses"] = {"200": {"description": "OK", "content": {media: {"schema": answer}}}}
    return operation
