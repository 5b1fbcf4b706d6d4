"""A forced tool choice's call schema: tools' local references still resolve once their schemas sit in
the call's (checked by the `jsonschema` validator and the Runner's GBNF converter), same-named
definitions of two tools stay apart, and a refused schema is blamed on the tool field the client sent."""

from __future__ import annotations

import json

import jsonschema
import pytest

from modelrunner.gateway import forced_tools
from modelrunner.gateway.errors import APIError
from modelrunner.runner.json_schema_gbnf import schema_to_gbnf
from modelrunner.v1 import runner_pb2
from tests.support.gateway_fakes import gateway_client

FIELD = "tools[{}].input_schema"


def loc(properties: dict) -> dict:
    """A pydantic-style schema: the argument `loc` is a reference to a definition named Loc."""
    return {"type": "object", "properties": {"loc": {"$ref": "#/$defs/Loc"}}, "required": ["loc"],
            "$defs": {"Loc": {"type": "object", "properties": properties, "required": list(properties),
                              "additionalProperties": False}}}


def tools(*parameters: dict) -> list[dict]:
    return [{"type": "function", "function": {"name": f"t{i}", "parameters": p}} for i, p in enumerate(parameters)]


def accepts(schema: dict, call: dict) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(call)


def test_a_tool_without_references_is_inlined():
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    schema = forced_tools.call_schema(tools(parameters), field=FIELD)
    assert schema["properties"]["arguments"] == parameters and "$defs" not in schema
    assert schema["properties"]["name"] == {"enum": ["t0"]}


def test_definitions_are_hoisted_and_references_rebased():
    schema = forced_tools.call_schema(tools(loc({"city": {"enum": ["Paris"]}})), field=FIELD)
    assert schema["properties"]["arguments"] == {"$ref": "#/$defs/tools[0].input_schema"}
    assert schema["$defs"]["tools[0].input_schema"]["properties"]["loc"] == {
        "$ref": "#/$defs/tools[0].input_schema/$defs/Loc"}
    schema_to_gbnf(json.dumps(schema))  # the Runner resolves every reference
    assert accepts(schema, {"name": "t0", "arguments": {"loc": {"city": "Paris"}}})
    assert not accepts(schema, {"name": "t0", "arguments": {"loc": {"city": "Rome"}}})


def test_same_named_definitions_of_two_tools_do_not_collide():
    schema = forced_tools.call_schema(tools(loc({"city": {"type": "string"}}), loc({"lat": {"type": "number"}})),
                                      field=FIELD)
    schema_to_gbnf(json.dumps(schema))
    assert accepts(schema, {"name": "t0", "arguments": {"loc": {"city": "Paris"}}})
    assert accepts(schema, {"name": "t1", "arguments": {"loc": {"lat": 48.9}}})
    assert not accepts(schema, {"name": "t1", "arguments": {"loc": {"city": "Paris"}}})


def test_a_named_tool_keeps_its_index_in_the_field():
    schema = forced_tools.call_schema(tools({"type": "object"}, loc({"city": {"type": "string"}})), "t1",
                                      field=FIELD)
    assert schema["properties"]["name"] == {"enum": ["t1"]}
    assert list(schema["$defs"]) == ["tools[1].input_schema"]
    assert schema["$comment"].endswith(" tools[1].input_schema")


def test_every_local_reference_is_rebased_and_data_is_left_alone():
    tree = {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2},  # a recursive schema
        "same": {"$ref": "#/properties/label"},
        "label": {"$ref": "#/definitions/Label"},
        "enum": {"const": {"$ref": "#/not/a/reference"}},  # a property named like a keyword; a JSON value
        "remote": {"$ref": "https://example.com/schema.json"},
    }, "definitions": {"Label": {"type": "string"}}}
    schema = forced_tools.call_schema(tools(tree), field=FIELD)
    moved = schema["$defs"]["tools[0].input_schema"]["properties"]
    base = "#/$defs/tools[0].input_schema"
    assert moved["children"]["items"] == {"$ref": base}
    assert moved["same"] == {"$ref": f"{base}/properties/label"}
    assert moved["label"] == {"$ref": f"{base}/definitions/Label"}
    assert moved["enum"] == {"const": {"$ref": "#/not/a/reference"}}
    assert moved["remote"] == {"$ref": "https://example.com/schema.json"}
    assert accepts(schema, {"name": "t0", "arguments": {"children": [{"label": "a"}], "same": "b"}})
    assert not accepts(schema, {"name": "t0", "arguments": {"children": [{"label": 1}]}})


def forced_request(tool_list: list[dict], name: str | None = None) -> runner_pb2.GenerateRequest:
    request = runner_pb2.GenerateRequest()
    forced_tools.force(request, tool_list, name, field=FIELD)
    return request


def refusal(detail: str) -> APIError:
    """What the gateway makes of the Runner's INVALID_ARGUMENT for the call's schema."""
    return APIError(400, f"response_format.json_schema: {detail}", code="invalid_argument")


@pytest.mark.parametrize(("detail", "message"), [
    ("pattern: is not supported in response_format schemas",
     "tools[0].input_schema: pattern: is not supported in response_format schemas"),
    ("$ref: '#/$defs/tools[0].input_schema/$defs/Nope' points at nothing in the schema",
     "tools[0].input_schema: $ref: '#/$defs/Nope' points at nothing in the schema"),  # the reference as sent
])
def test_a_refused_schema_is_blamed_on_the_tool_field(detail: str, message: str):
    blamed = forced_tools.blame(refusal(detail), forced_request(tools(loc({"a": {"type": "string"}}))))
    assert (blamed.status, blamed.message, blamed.param, blamed.code) == (
        400, message, "tools[0].input_schema", "invalid_argument")


def test_a_choice_of_several_tools_is_blamed_on_tools():
    blamed = forced_tools.blame(refusal("pattern: is not supported"), forced_request(tools({}, {})))
    assert (blamed.message, blamed.param) == ("tools: pattern: is not supported", "tools")


def test_other_errors_and_the_clients_own_schema_are_left_alone():
    forced = forced_request(tools({}))
    other = APIError(400, "chat.messages: is empty")
    assert forced_tools.blame(other, forced) is other
    own = runner_pb2.GenerateRequest(response_format=runner_pb2.ResponseFormat(
        type="json_schema", json_schema=json.dumps({"$comment": "mine", "type": "object"})))
    error = refusal("pattern: is not supported")
    assert forced_tools.blame(error, own) is error


WEATHER = {"type": "function", "function": {"name": "weather", "parameters": loc({"city": {"type": "string"}})}}
CHAT = {"model": "ai/tiny", "messages": [{"role": "user", "content": "weather?"}],
        "tools": [WEATHER, {"type": "function", "function": {"name": "other"}}]}


@pytest.fixture
async def gw():
    async with gateway_client() as pair:
        yield pair


@pytest.mark.parametrize(("choice", "names"), [
    ("required", ["weather", "other"]),
    ({"type": "function", "function": {"name": "weather"}}, ["weather"]),
])
async def test_openai_chat_required_or_named_choice_forces_a_call(gw, choice, names):
    client, fakes = gw
    reply = await client.post("/v1/chat/completions", json={**CHAT, "tool_choice": choice})
    assert reply.status_code == 200, reply.text
    sent = fakes.runner.requests[-1]
    schema = json.loads(sent.response_format.json_schema)
    assert sent.response_format.type == "json_schema"
    assert [v["properties"]["name"]["enum"][0] for v in schema.get("anyOf", [schema])] == names
    assert "tools[0].function.parameters" in schema["$defs"]
    assert json.loads(sent.chat.tool_choice_json) == choice  # the template still hears of it


@pytest.mark.parametrize(("extra", "param"), [
    ({"tool_choice": "required", "tools": []}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "absent"}}}, "tool_choice.function.name"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
])
async def test_openai_chat_choices_that_cannot_be_forced_are_400(gw, extra, param):
    client, fakes = gw
    before = len(fakes.runner.requests)
    reply = await client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text
    assert len(fakes.runner.requests) == before


async def test_openai_chat_auto_is_not_forced(gw):
    client, fakes = gw
    assert (await client.post("/v1/chat/completions", json={**CHAT, "tool_choice": "auto"})).status_code == 200
    assert not fakes.runner.requests[-1].response_format.type
