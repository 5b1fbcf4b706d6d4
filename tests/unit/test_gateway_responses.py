"""The OpenAI Responses routes against fake services: input items onto the Runner's chat, Response
objects, the numbered SSE events, stored responses and their conversations, errors."""

from __future__ import annotations

import json

import pytest

from tests.support.gateway_fakes import gateway_client

BODY = {"model": "ai/tiny", "input": "hi"}
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture
async def gw():
    async with gateway_client() as pair:
        yield pair


def events(text: str) -> list[dict]:
    out = []
    for block in text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name_line.removeprefix("event: ")
        out.append(data)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def roles(request) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in request.chat.messages]


async def test_create_retrieve_list_and_delete(gw):
    client, fakes = gw
    reply = await client.post("/v1/responses", json={**BODY, "instructions": "be brief", "max_output_tokens": 9,
                                                     "temperature": 0.5, "metadata": {"k": "v"}})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["object"] == "response" and answer["id"].startswith("resp") and answer["status"] == "completed"
    assert answer["model"] == "ai/tiny:latest" and answer["metadata"] == {"k": "v"} and answer["store"] is True
    [message] = answer["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["type"] == "output_text" and message["content"][0]["text"] == "Hello"
    assert answer["usage"] == {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 2,
                               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5}
    sent = fakes.runner.requests[-1]
    assert roles(sent) == [("system", "be brief"), ("user", "hi")]
    assert sent.sampling.max_tokens == 9 and sent.sampling.temperature == 0.5
    for prefix in ("/v1", "", "/engines/v1"):
        assert (await client.get(f"{prefix}/responses/{answer['id']}")).json() == answer
    items = (await client.get(f"/v1/responses/{answer['id']}/input_items")).json()
    assert items["object"] == "list" and items["has_more"] is False
    assert [(i["type"], i["role"], i["content"]) for i in items["data"]] == [
        ("message", "user", [{"type": "input_text", "text": "hi"}])]
    deleted = await client.delete(f"/v1/responses/{answer['id']}")
    assert deleted.json() == {"id": answer["id"], "object": "response", "deleted": True}
    gone = await client.get(f"/v1/responses/{answer['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["param"] == "response_id"
    assert (await client.delete(f"/v1/responses/{answer['id']}")).status_code == 404


async def test_a_conversation_over_previous_response_id(gw):
    client, fakes = gw
    first = (await client.post("/v1/responses", json={**BODY, "instructions": "only the first"})).json()
    second = (await client.post("/v1/responses", json={
        **BODY, "input": [{"role": "user", "content": [{"type": "input_text", "text": "and?"}]}],
        "previous_response_id": first["id"]})).json()
    assert second["previous_response_id"] == first["id"]
    assert roles(fakes.runner.requests[-1]) == [("user", "hi"), ("assistant", "Hello"), ("user", "and?")]
    await client.post("/v1/responses", json={**BODY, "input": "more", "previous_response_id": second["id"]})
    assert [r for r, _ in roles(fakes.runner.requests[-1])] == ["user", "assistant", "user", "assistant", "user"]


async def test_store_false_keeps_nothing(gw):
    client, _ = gw
    answer = (await client.post("/v1/responses", json={**BODY, "store": False})).json()
    assert answer["store"] is False
    assert (await client.get(f"/v1/responses/{answer['id']}")).status_code == 404
    follow = await client.post("/v1/responses", json={**BODY, "previous_response_id": answer["id"]})
    assert follow.status_code == 404 and follow.json()["error"]["code"] == "previous_response_not_found"


async def test_function_calls_and_their_outputs(gw):
    client, fakes = gw
    answer = (await client.post("/v1/responses", json={**BODY, "model": "ai/tools", "tools": TOOLS})).json()
    call = next(o for o in answer["output"] if o["type"] == "function_call")
    assert (call["name"], call["call_id"]) == ("get_weather", "call_1")
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert answer["tools"][0]["name"] == "get_weather" and answer["tools"][0]["strict"] is False
    await client.post("/v1/responses", json={**BODY, "tools": TOOLS, "previous_response_id": answer["id"], "input": [
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]})
    sent = fakes.runner.requests[-1]
    assert [m.role for m in sent.chat.messages] == ["user", "assistant", "tool"]
    assert sent.chat.messages[1].tool_calls[0].id == "call_1"
    assert (sent.chat.messages[2].content, sent.chat.messages[2].name) == ("sunny", "get_weather")
    await client.post("/v1/responses", json={**BODY, "tools": TOOLS, "tool_choice": {"type": "function",
                                                                                       "name": "get_weather"}})
    schema = json.loads(fakes.runner.requests[-1].response_format.json_schema)
    assert schema["properties"]["name"] == {"enum": ["get_weather"]}


async def test_text_format_json_schema(gw):
    client, fakes = gw
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    answer = (await client.post("/v1/responses", json={
        **BODY, "text": {"format": {"type": "json_schema", "name": "thing", "schema": schema}}})).json()
    sent = fakes.runner.requests[-1]
    assert sent.response_format.type == "json_schema" and json.loads(sent.response_format.json_schema) == schema
    assert answer["text"]["format"] == {"type": "json_schema", "name": "thing", "schema": schema}


async def test_stream_events(gw):
    client, _ = gw
    reply = await client.post("/v1/responses", json={**BODY, "stream": True})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    seen = events(reply.text)
    assert [e["type"] for e in seen] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert seen[0]["response"]["status"] == "in_progress" and seen[0]["response"]["output"] == []
    assert seen[6]["text"] == "Hello" and seen[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"
    stored = await client.get(f"/v1/responses/{seen[-1]['response']['id']}")
    assert stored.json() == seen[-1]["response"]


async def test_streamed_function_call_events(gw):
    client, _ = gw
    reply = await client.post("/v1/responses", json={**BODY, "model": "ai/tools", "tools": TOOLS, "stream": True})
    names = [e["type"] for e in events(reply.text)]
    assert names[-5:] == ["response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done", "response.completed"]


async def test_an_error_after_the_stream_began_fails_the_response(gw):
    client, _ = gw
    reply = await client.post("/v1/responses", json={**BODY, "model": "ai/broken", "stream": True})
    last = events(reply.text)[-1]
    assert last["type"] == "response.failed" and "the backend crashed" in last["response"]["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({**BODY, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400,
         "input[0].content[0]"),
        ({**BODY, "input": [{"type": "function_call", "name": "f"}]}, 400, "input[0]"),
        ({**BODY, "input": [{"type": "web_search_call"}]}, 400, "input[0].type"),
        ({**BODY, "input": []}, 400, "input"),
        ({**BODY, "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({**BODY, "tool_choice": "required"}, 400, "tool_choice"),
        ({**BODY, "text": {"format": {"type": "json_schema", "name": "x"}}}, 400, "text.format.schema"),
        ({**BODY, "background": True}, 400, "background"),
        ({**BODY, "temperature": 3}, 400, "temperature"),
        ({**BODY, "previous_response_id": "resp_nope"}, 404, "previous_response_id"),
    ],
)
async def test_errors_in_openai_shape(gw, body, status, param):
    client, _ = gw
    reply = await client.post("/v1/responses", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and set(error) == {"message", "type", "param", "code"}


async def test_input_items_paging(gw):
    client, _ = gw
    texts = [f"m{i}" for i in range(5)]
    answer = (await client.post("/v1/responses", json={**BODY, "input": [
        {"role": "user", "content": t} for t in texts]})).json()
    url = f"/v1/responses/{answer['id']}/input_items"
    page = (await client.get(url, params={"limit": 2, "order": "asc"})).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["m0", "m1"] and page["has_more"] is True
    rest = (await client.get(url, params={"order": "asc", "after": page["last_id"]})).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["m2", "m3", "m4"] and rest["has_more"] is False
    newest = (await client.get(url, params={"limit": 1})).json()
    assert newest["data"][0]["content"][0]["text"] == "m4"
    bad = await client.get(url, params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


async def test_both_surfaces_are_in_the_openapi_document(gw):
    client, _ = gw
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/responses", "/responses", "/engines/v1/responses", "/v1/responses/{response_id}",
                 "/v1/responses/{response_id}/input_items", "/v1/messages", "/anthropic/v1/messages",
                 "/v1/messages/count_tokens"):
        assert path in paths, path
    params = {p["name"] for p in paths["/v1/responses/{response_id}/input_items"]["get"]["parameters"]}
    assert {"limit", "order", "after", "before"} <= params
