"""The OpenAI routes against fake services: request translation, answers, SSE framing."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from tests.support.gateway_fakes import gateway_client

CHAT = {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw():
    async with gateway_client() as pair:
        yield pair


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    return [e.removeprefix("data: ") for e in events]


async def test_list_models_one_entry_per_tag(gw):
    client, _ = gw
    for prefix in ("/v1", "/engines/v1", "/engines/llama.cpp/v1"):
        reply = await client.get(f"{prefix}/models")
        assert reply.status_code == 200
        data = reply.json()["data"]
        assert [m["id"] for m in data] == ["ai/tiny:latest", "ai/tiny:v1"]
        assert data[0]["object"] == "model" and data[0]["owned_by"] == "docker"
        assert data[0]["created"] == 1700000000
        assert data[0]["dmr"] == {"context_window": 512, "architecture": "llama", "parameters": "1.00 M",
                                  "quantization": "F32", "size": "524.29 kB"}


async def test_get_model_and_unknown_model(gw):
    client, _ = gw
    reply = await client.get("/v1/models/ai/tiny")
    assert reply.status_code == 200 and reply.json()["id"] == "ai/tiny:latest"
    missing = await client.get("/v1/models/ai/nothing")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert "modelrunner pull ai/nothing:latest" in error["message"] and error["code"] == "model_not_found"


async def test_chat_non_streaming_with_usage_and_translation(gw):
    client, fakes = gw
    body = {
        **CHAT,
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 7, "stop": "\n", "seed": 42, "temperature": 0, "top_k": 5, "min_p": 0.1,
        "repeat_penalty": 1.1, "logit_bias": {"15": -100}, "response_format": {"type": "json_object"},
    }
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["object"] == "chat.completion" and data["model"] == "ai/tiny:latest"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    sent = fakes.runner.requests[-1]
    assert sent.model == "docker.io/ai/tiny:latest"
    assert [m.content for m in sent.chat.messages] == ["be brief", "a\nb"]
    assert sent.sampling.max_tokens == 7 and list(sent.sampling.stop) == ["\n"] and sent.sampling.seed == 42
    assert sent.sampling.HasField("temperature") and sent.sampling.temperature == 0
    assert sent.sampling.top_k == 5 and dict(sent.sampling.logit_bias) == {15: -100.0}
    assert sent.response_format.type == "json_object"
    assert not sent.sampling.HasField("top_p")


async def test_chat_tools_round_trip(gw):
    client, fakes = gw
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = {"model": "ai/tools", "tools": tools, "tool_choice": "auto", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c0", "content": "sunny"},
    ]}
    reply = await client.post("/v1/chat/completions", json=body)
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    sent = fakes.runner.requests[-1].chat
    assert json.loads(sent.tools_json) == tools and json.loads(sent.tool_choice_json) == "auto"
    assert sent.messages[1].tool_calls[0].name == "get_weather" and sent.messages[2].tool_call_id == "c0"
    streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
    chunks = [json.loads(e) for e in sse_events(streamed.text)[:-1]]
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0][0]["index"] == 0 and calls[0][0]["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_chat_streaming_sse_framing_and_usage(gw):
    client, _ = gw
    reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True,
                                                             "stream_options": {"include_usage": True}})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = sse_events(reply.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1


async def test_chat_streaming_without_usage_has_no_usage_chunk(gw):
    client, _ = gw
    events = sse_events((await client.post("/v1/chat/completions", json={**CHAT, "stream": True})).text)
    assert all("usage" not in json.loads(e) for e in events[:-1])


async def test_chat_logprobs(gw):
    client, fakes = gw
    reply = await client.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 1})
    content = reply.json()["choices"][0]["logprobs"]["content"]
    assert content[0]["token"] == "Hel" and content[0]["bytes"] == list(b"Hel")
    assert content[0]["top_logprobs"][0]["logprob"] == -0.5
    assert fakes.runner.requests[-1].top_logprobs == 1


async def test_stream_error_after_first_chunk_is_an_sse_error_event(gw):
    client, _ = gw
    reply = await client.post("/v1/chat/completions", json={**CHAT, "model": "ai/broken", "stream": True})
    events = sse_events(reply.text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["message"] == "the backend crashed"


async def test_completions_string_and_list_prompt(gw):
    client, fakes = gw
    for prompt in ("Once", ["Once"]):
        reply = await client.post("/v1/completions", json={"model": "ai/tiny", "prompt": prompt, "max_tokens": 4})
        data = reply.json()
        assert data["object"] == "text_completion" and data["choices"][0]["text"] == "Hello"
        assert fakes.runner.requests[-1].prompt == "Once" and fakes.runner.requests[-1].sampling.max_tokens == 4
    two = await client.post("/v1/completions", json={"model": "ai/tiny", "prompt": ["a", "b"]})
    assert two.status_code == 400 and two.json()["error"]["param"] == "prompt"


async def test_completions_streaming(gw):
    client, _ = gw
    reply = await client.post("/engines/llama.cpp/v1/completions", json={"model": "ai/tiny", "prompt": "x", "stream": True})
    events = sse_events(reply.text)
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and "".join(c["choices"][0]["text"] for c in chunks) == "Hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_embeddings_float_and_base64(gw):
    client, fakes = gw
    reply = await client.post("/v1/embeddings", json={"model": "ai/tiny", "input": ["a", "b"]})
    data = reply.json()
    assert [d["embedding"] for d in data["data"]] == [[0.5, -1.0], [0.5, -1.0]]
    assert data["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    encoded = await client.post("/v1/embeddings", json={"model": "ai/tiny", "input": "a", "encoding_format": "base64"})
    raw = base64.b64decode(encoded.json()["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)
    assert list(fakes.runner.requests[-1].inputs) == ["a"]
