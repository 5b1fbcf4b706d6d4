"""Forced tool choices through the real `anthropic` and `openai` clients against the real stack, with the
tiny GGUF: Anthropic's "any", the Responses API's "required", OpenAI chat's "required" and named function
(whole and streamed) answer a call whose arguments follow the tool's schema, pydantic-style `$defs`
references included; a schema the Runner refuses is a 400 naming the tool field the client sent."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import openai
import pytest

from tests.support.stack import serving

QUESTION = "What is the weather in Paris?"
MESSAGES = [{"role": "user", "content": QUESTION}]


def located(properties: dict) -> dict:
    """A pydantic-style schema: `loc` refers to the definition Loc. Every value is an enum, so a forced
    call from even the random tiny model is deterministic."""
    return {"type": "object", "properties": {"loc": {"$ref": "#/$defs/Loc"}}, "required": ["loc"],
            "additionalProperties": False,
            "$defs": {"Loc": {"type": "object", "properties": {k: {"enum": [v]} for k, v in properties.items()},
                              "required": list(properties), "additionalProperties": False}}}


WEATHER = located({"city": "Paris"})
PLACE = located({"lat": 48.9})  # a Loc of its own, under the same name
DANGLING = {"type": "object", "properties": {"loc": {"$ref": "#/$defs/Nope"}}}


def chat_tool(name: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    with serving(tmp_path_factory.mktemp("forced-tools"), {"ai/tiny": tiny_gguf}) as running:
        yield running


def test_anthropic_any_with_defs(claude):
    reply = claude.messages.create(model="ai/tiny", max_tokens=128, messages=MESSAGES, tool_choice={"type": "any"},
                                   tools=[{"name": "weather", "input_schema": WEATHER}], extra_body={"temperature": 0})
    assert reply.stop_reason == "tool_use"
    use = next(block for block in reply.content if block.type == "tool_use")
    assert use.name == "weather" and use.input == {"loc": {"city": "Paris"}}


def test_responses_required_with_defs(oai):
    reply = oai.responses.create(model="ai/tiny", temperature=0, max_output_tokens=128, input=QUESTION,
                                 tools=[{"type": "function", "name": "weather", "parameters": WEATHER}],
                                 tool_choice="required")
    call = next(item for item in reply.output if item.type == "function_call")
    assert call.name == "weather" and json.loads(call.arguments) == {"loc": {"city": "Paris"}}


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "weather"}}])
def test_openai_chat_forced_call(oai, choice):
    asked = {"model": "ai/tiny", "temperature": 0, "max_tokens": 128, "messages": MESSAGES, "tool_choice": choice,
             "tools": [chat_tool("weather", WEATHER)]}
    whole = oai.chat.completions.create(**asked).choices[0]
    assert whole.finish_reason == "tool_calls"
    [call] = whole.message.tool_calls
    assert call.function.name == "weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)

    calls: dict[int, dict] = {}
    finish = None
    for chunk in oai.chat.completions.create(**asked, stream=True):
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or ():
            entry = calls.setdefault(part.index, {"name": "", "arguments": ""})
            entry["name"] += part.function.name or ""
            entry["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and list(calls) == [0] and calls[0]["name"] == "weather"
    assert json.loads(calls[0]["arguments"]) == json.loads(call.function.arguments)  # greedy: the same call


def test_two_tools_with_same_named_defs(claude, oai):
    """Each tool's Loc stays its own: a call of either follows that tool's definition."""
    tools = [{"name": "weather", "input_schema": WEATHER}, {"name": "place", "input_schema": PLACE}]
    for name, arguments in (("weather", {"loc": {"city": "Paris"}}), ("place", {"loc": {"lat": 48.9}})):
        reply = claude.messages.create(model="ai/tiny", max_tokens=128, messages=MESSAGES, tools=tools,
                                       tool_choice={"type": "tool", "name": name}, extra_body={"temperature": 0})
        assert [(b.name, b.input) for b in reply.content if b.type == "tool_use"] == [(name, arguments)]
    [call] = oai.chat.completions.create(
        model="ai/tiny", temperature=0, max_tokens=128, messages=MESSAGES, tool_choice="required",
        tools=[chat_tool("weather", WEATHER), chat_tool("place", PLACE)]).choices[0].message.tool_calls
    jsonschema.validate(json.loads(call.function.arguments), {"weather": WEATHER, "place": PLACE}[call.function.name])


def test_a_refused_tool_schema_names_the_tool_field(claude, oai):
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="ai/tiny", max_tokens=16, messages=MESSAGES, tool_choice={"type": "any"},
                               tools=[{"name": "weather", "input_schema": DANGLING}])
    assert caught.value.body["error"]["message"] == (
        "tools[0].input_schema: $ref: '#/$defs/Nope' points at nothing in the schema")
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model="ai/tiny", max_output_tokens=16, input=QUESTION, tool_choice="required",
                             tools=[{"type": "function", "name": "weather", "parameters": DANGLING}])
    assert caught.value.body["param"] == "tools[0].parameters"
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="ai/tiny", max_tokens=16, messages=MESSAGES, tool_choice="required",
                                    tools=[chat_tool("weather", WEATHER), chat_tool("broken", DANGLING)])
    assert caught.value.body["param"] == "tools"  # either could be called: the whole list is blamed
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="ai/tiny", max_tokens=16, messages=MESSAGES, tools=[
            chat_tool("weather", WEATHER), chat_tool("broken", {"type": "array", "uniqueItems": True})],
            tool_choice={"type": "function", "function": {"name": "broken"}})
    assert caught.value.body["param"] == "tools[1].function.parameters"
    assert caught.value.body["message"].startswith("tools[1].function.parameters: uniqueItems")
