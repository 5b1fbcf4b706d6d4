"""The Anthropic Messages routes against fake services: translation onto the Runner's chat, answers,
the SSE event sequence, and errors in Anthropic's shape."""

from __future__ import annotations

import json

import pytest

from tests.support.gateway_fakes import gateway_client

BODY = {"model": "ai/tiny", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
TOOLS = [{"name": "get_weather", "description": "the weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture
async def gw():
    async with gateway_client() as pair:
        yield pair


def events(text: str) -> list[tuple[str, dict]]:
    """(name, data) of each SSE event, checking that each event's name is its data's type."""
    out = []
    for block in text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        out.append((name, data))
    return out


async def test_message_translation_and_answer(gw):
    client, fakes = gw
    body = {
        **BODY,
        "system": [{"type": "text", "text": "be"}, {"type": "text", "text": "brief"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                                              {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                                         {"type": "text", "text": "thanks"}]},
        ],
        "tools": TOOLS, "stop_sequences": ["\n\n", ""], "temperature": 0, "top_k": 3,
    }
    reply = await client.post("/v1/messages", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "id": reply.json()["id"], "type": "message", "role": "assistant", "model": "ai/tiny:latest",
        "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }
    sent = fakes.runner.requests[-1]
    assert [(m.role, m.content) for m in sent.chat.messages] == [
        ("system", "be\nbrief"), ("user", "weather?"), ("assistant", "checking"), ("tool", "sunny"), ("user", "thanks")]
    call = sent.chat.messages[2].tool_calls[0]
    assert (call.id, call.name, json.loads(call.arguments)) == ("toolu_1", "get_weather", {"city": "Paris"})
    assert (sent.chat.messages[3].tool_call_id, sent.chat.messages[3].name) == ("toolu_1", "get_weather")
    assert json.loads(sent.chat.tools_json)[0]["function"]["parameters"]["required"] == ["city"]
    assert list(sent.sampling.stop) == ["\n\n"] and sent.sampling.max_tokens == 16 and sent.sampling.top_k == 3
    assert not sent.response_format.type  # no tool forced


@pytest.mark.parametrize(("choice", "names"), [({"type": "tool", "name": "get_weather"}, ["get_weather"]),
                                               ({"type": "any"}, ["get_weather", "other"])])
async def test_a_forced_tool_choice_constrains_the_answer_to_a_call(gw, choice, names):
    client, fakes = gw
    tools = [*TOOLS, {"name": "other", "input_schema": {"type": "object"}}]
    reply = await client.post("/v1/messages", json={**BODY, "tools": tools, "tool_choice": choice})
    assert reply.status_code == 200, reply.text
    schema = json.loads(fakes.runner.requests[-1].response_format.json_schema)
    variants = schema.get("anyOf", [schema])
    assert [v["properties"]["name"]["enum"][0] for v in variants] == names
    assert variants[0]["properties"]["arguments"] == TOOLS[0]["input_schema"]


async def test_structured_output_is_a_json_schema_grammar(gw):
    client, fakes = gw
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    reply = await client.post("/v1/messages", json={**BODY, "output_config": {
        "effort": "low", "format": {"type": "json_schema", "schema": schema}}})
    assert reply.status_code == 200, reply.text
    sent = fakes.runner.requests[-1].response_format
    assert sent.type == "json_schema" and json.loads(sent.json_schema) == schema


async def test_tool_use_answer(gw):
    client, _ = gw
    reply = await client.post("/anthropic/v1/messages", json={**BODY, "model": "ai/tools", "tools": TOOLS})
    message = reply.json()
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]


async def test_stream_event_sequence(gw):
    client, _ = gw
    reply = await client.post("/v1/messages", json={**BODY, "model": "ai/tools", "tools": TOOLS, "stream": True})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    seen = events(reply.text)
    assert [name for name, _ in seen] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    start = seen[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == "ai/tools:latest"
    assert (start["usage"]["input_tokens"], start["usage"]["output_tokens"]) == (3, 0)  # the first chunk's count
    assert "".join(d["delta"]["text"] for n, d in seen if d.get("delta", {}).get("type") == "text_delta") == "Hello"
    tool_start = seen[6][1]
    assert tool_start["index"] == 1 and tool_start["content_block"] == {
        "type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    assert seen[7][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":"Paris"}'}
    assert seen[9][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert seen[9][1]["usage"]["output_tokens"] == 2


@pytest.mark.parametrize(
    ("body", "status", "kind", "words"),
    [
        ({**BODY, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400,
         "invalid_request_error", "messages[0].content[0]: image blocks are not supported"),
        ({k: v for k, v in BODY.items() if k != "max_tokens"}, 400, "invalid_request_error", "max_tokens"),
        ({**BODY, "temperature": 1.5}, 400, "invalid_request_error", "temperature"),
        ({**BODY, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "y"}]}]}, 400,
         "invalid_request_error", "belongs in an assistant message"),
        ({**BODY, "tools": [{"name": "web", "type": "web_search_20250305"}]}, 400, "invalid_request_error",
         "tools[0].type"),
        ({**BODY, "tools": TOOLS, "tool_choice": {"type": "tool", "name": "nope"}}, 400, "invalid_request_error",
         "tool_choice.name"),
        ({**BODY, "model": "ai/missing"}, 404, "not_found_error", "modelrunner pull ai/missing:latest"),
        ({**BODY, "model": "ai/busy"}, 429, "rate_limit_error", "queue full"),
    ],
)
async def test_errors_in_anthropic_shape(gw, body, status, kind, words):
    client, _ = gw
    reply = await client.post("/v1/messages", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()
    assert error["type"] == "error" and error["error"]["type"] == kind and words in error["error"]["message"]
    if status == 429:
        assert reply.headers["retry-after"] == "7"


async def test_malformed_json_is_an_anthropic_error(gw):
    client, _ = gw
    reply = await client.post("/v1/messages", content=b"{nope", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"


async def test_an_error_after_the_stream_began_is_an_error_event(gw):
    client, _ = gw
    reply = await client.post("/v1/messages", json={**BODY, "model": "ai/broken", "stream": True})
    seen = events(reply.text)
    assert seen[-1][0] == "error" and "the backend crashed" in seen[-1][1]["error"]["message"]


async def test_anthropic_clients_key_header_is_the_api_key():
    from modelrunner.gateway.settings import GatewayOptions

    async with gateway_client(GatewayOptions(api_key="sesame")) as (client, _):
        assert (await client.post("/v1/messages", json=BODY, headers={"x-api-key": "sesame"})).status_code == 200
        assert (await client.post("/v1/messages", json=BODY, headers={"x-api-key": "wrong"})).status_code == 401
