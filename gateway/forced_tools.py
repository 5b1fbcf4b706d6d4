"""A forced tool choice as a grammar: the JSON schema of a call the Runner's tool-call parser reads.

Anthropic's `tool_choice` {"type": "any" | "tool"}, and OpenAI's "required" or a named function (chat
and Responses), promise a call. A chat template only invites one, so the answer is constrained instead:
a JSON object {"name": ..., "arguments": ...} whose arguments follow the chosen tool's parameter schema,
which the Runner turns into tool calls like any other answer of that shape.

A tool's local references ("#/$defs/Loc", pydantic's way) point into its own schema, not the call's
around it, so a tool with any is moved whole under the call's $defs, keyed by the field the client sent
it in, and its references are rebased there: tools with same-named definitions cannot collide.
"""

from __future__ import annotations

import json
from typing import Any

from modelrunner.gateway.errors import APIError
from modelrunner.v1 import runner_pb2

_REFUSED = "response_format.json_schema: "  # how the Runner's refusal of the call's schema starts
_FROM = "the call of a forced tool_choice; its arguments come from "  # the $comment that tells blame() the field
_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_DATA = frozenset({"enum", "const", "default", "examples"})  # JSON values: a "$ref" key in them is no reference


def _rebased(schema: Any, base: str) -> Any:
    """`schema` with each local reference "#..." made "<base>...", for `schema` moved to `base`."""
    if isinstance(schema, list):
        return [_rebased(s, base) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = base + value[1:]
        elif key in _MAPS and isinstance(value, dict):  # names -> schemas: a name is no keyword
            out[key] = {name: _rebased(s, base) for name, s in value.items()}
        elif key in _DATA:
            out[key] = value
        else:
            out[key] = _rebased(value, base)
    return out


def call_schema(tools: list[dict], name: str | None = None, *, field: str) -> dict:
    """The schema of one call of the tool `name`, or of any of `tools` (each {"function": {name,
    parameters}}, as the contract's tools_json holds them). `field` is where the client sent tool i's
    parameters, "{}" standing for i ("tools[{}].input_schema"): the schema names it for `blame`."""
    defs: dict[str, Any] = {}
    variants, fields = [], []
    for i, f in enumerate(t["function"] for t in tools):
        if name is not None and f["name"] != name:
            continue
        parameters = f.get("parameters") or {"type": "object"}
        fields.append(field.format(i))
        moved = _rebased(parameters, f"#/$defs/{fields[-1]}")
        if moved != parameters:
            defs[fields[-1]] = moved
            parameters = {"$ref": f"#/$defs/{fields[-1]}"}
        variants.append({
            "type": "object",
            "properties": {"name": {"enum": [f["name"]]}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    schema["$comment"] = _FROM + (fields[0] if len(fields) == 1 else "tools")
    if defs:
        schema["$defs"] = defs
    return schema


def force(request: runner_pb2.GenerateRequest, tools: list[dict], name: str | None = None, *, field: str) -> None:
    """Constrains `request`'s answer to a call of `name` (or of any tool)."""
    request.response_format.type = "json_schema"
    request.response_format.json_schema = json.dumps(call_schema(tools, name, field=field))


def blame(error: APIError, request: runner_pb2.GenerateRequest) -> APIError:
    """The Runner's refusal of a forced call's schema names response_format.json_schema, which the client
    never sent: name the tool field instead (or `tools`, when any of several could be called)."""
    if not error.message.startswith(_REFUSED) or _FROM not in request.response_format.json_schema:
        return error  # not about a forced call's schema (the client's own response_format, say)
    schema = json.loads(request.response_format.json_schema)
    comment = schema.get("$comment") if isinstance(schema, dict) else None
    if not isinstance(comment, str) or not comment.startswith(_FROM):
        return error
    field = comment.removeprefix(_FROM)
    detail = error.message.removeprefix(_REFUSED).replace(f"#/$defs/{field}/", "#/")  # its references as sent
    return APIError(error.status, f"{field}: {detail}", type=error.type, param=field, code=error.code,
                    headers=error.headers)
