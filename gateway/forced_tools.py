"""A forced tool choice as a grammar: the JSON schema of a call the Runner's tool-call parser reads.

Anthropic's `tool_choice` {"type": "any" | "tool"} and the Responses API's "required" or a named
function promise a call. A chat template only invites one, so the answer is constrained instead: a JSON
object {"name": ..., "arguments": ...} whose arguments follow the chosen tool's parameter schema, which
the Runner turns into tool calls like any other answer of that shape.
"""

from __future__ import annotations

import json

from modelrunner.v1 import runner_pb2


def call_schema(tools: list[dict], name: str | None = None) -> dict:
    """The schema of one call of the tool `name`, or of any of `tools` (each {"function": {name,
    parameters}}, as the contract's tools_json holds them)."""
    chosen = [t["function"] for t in tools if name is None or t["function"]["name"] == name]
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"enum": [f["name"]]},
                "arguments": f.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in chosen
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def force(request: runner_pb2.GenerateRequest, tools: list[dict], name: str | None = None) -> None:
    """Constrains `request`'s answer to a call of `name` (or of any tool)."""
    request.response_format.type = "json_schema"
    request.response_format.json_schema = json.dumps(call_schema(tools, name))
