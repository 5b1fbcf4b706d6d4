"""The Ollama routes against the fake services: request translation, NDJSON framing, Ollama's error
bodies and statuses, keep_alive and options edge cases, pull progress lines."""

from __future__ import annotations

import json

import grpc
import pytest

from modelrunner.gateway.ollama_models import keep_alive_text
from modelrunner.v1 import runner_pb2
from tests.support.gateway_fakes import FakeRunner, gateway_client

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False}
DEEP = json.loads("[" * 70 + "]" * 70)


async def _load_model(self, request, context):
    if request.model == "docker.io/ai/missing:latest":
        await context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.model} not found")
    self.loaded = request
    return runner_pb2.RunnerInfo(model_name=request.model)


@pytest.fixture
async def gw(monkeypatch):
    monkeypatch.setattr(FakeRunner, "LoadModel", _load_model, raising=False)
    async with gateway_client() as pair:
        yield pair


def lines(text: str) -> list[dict]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(("given", "expected"), [
    ("5m", "5m"), ("1h30m", "1h30m"), ("300ms", "300ms"), (300, "300"), (1.5, "1.5"), ("90s", "90s"),
    (0, "0"), ("0", "0"), ("0s", "0"), (-1, "-1"), ("-5m", "-1"), ("2us", "0"), ("1.5h", "1.5h"), (None, None),
])
def test_keep_alive_becomes_the_runners_form(given, expected):
    assert keep_alive_text(given) == expected


@pytest.mark.parametrize("given", [True, "forever", "5 m", "10d", [], float("inf")])
def test_keep_alive_refuses_what_go_cannot_parse(given):
    with pytest.raises(Exception, match="duration|seconds|finite"):
        keep_alive_text(given)


async def test_chat_not_streamed_translates_options_and_answers_in_ollamas_shape(gw):
    client, fakes = gw
    body = {**CHAT, "model": "ai/tiny:latest", "keep_alive": "10m", "format": "json", "options": {
        "num_predict": 7, "temperature": 0, "top_k": 5, "top_p": 0.9, "min_p": 0.1, "seed": 42,
        "stop": ["\n", ""], "num_ctx": 4096, "repeat_penalty": 1.1, "mirostat": 2}}
    reply = await client.post("/api/chat", json=body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["model"] == "ai/tiny:latest" and data["done"] is True and data["done_reason"] == "stop"
    assert data["message"] == {"role": "assistant", "content": "Hello"}
    assert data["prompt_eval_count"] == 3 and data["eval_count"] == 2
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(data[name], int) and data[name] >= 0
    assert (data["prompt_eval_duration"], data["eval_duration"]) == (2_000_000, 5_000_000)  # the engine's
    assert data["total_duration"] >= data["load_duration"]
    sent = fakes.runner.requests[-1]
    assert sent.model == "docker.io/ai/tiny:latest" and sent.keep_alive == "10m"
    assert fakes.runner.loaded.model == sent.model and fakes.runner.loaded.keep_alive == "10m"
    p = sent.sampling
    assert (p.max_tokens, p.top_k, p.seed, list(p.stop)) == (7, 5, 42, ["\n"])
    assert p.HasField("temperature") and p.temperature == 0 and p.min_p == pytest.approx(0.1)
    assert sent.response_format.type == "json_object"


async def test_chat_streams_ndjson_lines_then_a_final_line_with_timings(gw):
    client, _ = gw
    reply = await client.post("/api/chat", json={**CHAT, "stream": True})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/x-ndjson")
    got = lines(reply.text)
    assert "".join(line["message"]["content"] for line in got) == "Hello"
    assert [line["done"] for line in got] == [False, False, True]
    assert got[-1]["done_reason"] == "stop" and got[-1]["eval_count"] == 2 and "total_duration" in got[-1]


async def test_generate_uses_the_chat_template_unless_raw(gw):
    client, fakes = gw
    reply = await client.post("/api/generate", json={"model": "tiny", "prompt": "Once", "system": "be brief",
                                                     "stream": False, "format": {"type": "object"}})
    assert reply.json()["response"] == "Hello" and reply.json()["done_reason"] == "stop"
    sent = fakes.runner.requests[-1]
    assert [(m.role, m.content) for m in sent.chat.messages] == [("system", "be brief"), ("user", "Once")]
    assert sent.response_format.type == "json_schema"
    assert json.loads(sent.response_format.json_schema) == {"type": "object"}
    raw = await client.post("/api/generate", json={"model": "tiny", "prompt": "Once", "raw": True})
    assert "".join(line["response"] for line in lines(raw.text)) == "Hello"
    assert fakes.runner.requests[-1].prompt == "Once"


async def test_tools_round_trip_in_ollamas_shape(gw):
    client, fakes = gw
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    body = {"model": "tools", "messages": messages, "tools": tools}
    reply = await client.post("/api/chat", json={**body, "stream": False})
    message = reply.json()["message"]
    assert message["tool_calls"] == [
        {"id": "call_1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert reply.json()["done_reason"] == "stop"
    sent = fakes.runner.requests[-1].chat
    assert json.loads(sent.tools_json) == tools
    call = sent.messages[1].tool_calls[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    assert sent.messages[2].name == "get_weather" and sent.messages[2].tool_call_id == call.id
    streamed = lines((await client.post("/api/chat", json=body)).text)
    calls = [line["message"]["tool_calls"] for line in streamed if "tool_calls" in line["message"]]
    assert calls and calls[0][0]["function"]["arguments"] == {"city": "Paris"} and streamed[-1]["done"] is True


async def test_error_after_the_first_line_is_an_error_line(gw):
    client, _ = gw
    got = lines((await client.post("/api/generate", json={"model": "broken", "prompt": "x"})).text)
    assert got[0]["response"] == "a" and got[-1] == {"error": "the backend crashed"}


@pytest.mark.parametrize(("path", "kwargs", "status", "needle"), [
    ("/api/chat", {"content": b"", "headers": {"content-type": "application/json"}}, 400, "missing request body"),
    ("/api/chat", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ("/api/chat", {"json": {"messages": []}}, 400, "model"),
    ("/api/chat", {"content": b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}',
                   "headers": {"content-type": "application/json"}}, 400, "messages[0].content: text with a lone"),
    ("/api/generate", {"content": b'{"model": "tiny", "prompt": "x", "format": {"maximum": NaN}}',
                       "headers": {"content-type": "application/json"}}, 400, "format.maximum: nan"),
    ("/api/embed", {"json": {"model": "tiny", "input": "x", "options": {"a": DEEP}}}, 400, "nested deeper than 64"),
    ("/api/chat", {"json": {**CHAT, "options": {"temperature": "hot"}}}, 400, "options.temperature"),
    ("/api/chat", {"json": {**CHAT, "options": {"top_p": 0}}}, 400, "options.top_p"),
    ("/api/chat", {"json": {**CHAT, "messages": [{"role": "robot", "content": "x"}]}}, 400, "messages[0].role"),
    ("/api/chat", {"json": {**CHAT, "keep_alive": "soon"}}, 400, "keep_alive"),
    ("/api/chat", {"json": {**CHAT, "format": "xml"}}, 400, "format"),
    ("/api/chat", {"json": {**CHAT, "think": True}}, 400, '"tiny" does not support thinking'),
    ("/api/chat", {"json": {**CHAT, "model": "NOT A NAME"}}, 400, "model"),
    ("/api/chat", {"json": {**CHAT, "model": "missing"}}, 404, "model 'missing' not found"),
    ("/api/chat", {"json": {**CHAT, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}}, 400,
     "messages[0].images"),
    ("/api/generate", {"json": {"model": "tiny", "prompt": "x", "suffix": "y"}}, 400, "suffix"),
    ("/api/generate", {"json": {"model": "tiny", "prompt": "x", "raw": True, "system": "s"}}, 400, "raw mode"),
    ("/api/embed", {"json": {"model": "tiny", "input": []}}, 400, "input"),
    ("/api/embed", {"json": {"model": "tiny", "input": ["a", ""]}}, 400, "input"),
    ("/api/show", {"json": {"model": "absent"}}, 404, "model 'absent' not found"),
    ("/api/copy", {"json": {"source": "tiny", "destination": "x@sha256:" + "0" * 64}}, 400, "destination"),
])
async def test_errors_are_ollamas_body_with_its_status(gw, path, kwargs, status, needle):
    client, _ = gw
    reply = await client.post(path, **kwargs)
    assert reply.status_code == status, reply.text
    assert set(reply.json()) == {"error"} and needle in reply.json()["error"], reply.json()


async def test_busy_keeps_retry_after_and_the_ollama_body(gw):
    client, _ = gw
    reply = await client.post("/api/chat", json={**CHAT, "model": "busy"})
    assert reply.status_code == 429 and reply.headers["retry-after"] == "7" and reply.json() == {"error": "queue full"}


async def test_empty_chat_loads_and_keep_alive_zero_unloads(gw):
    client, fakes = gw
    loaded = await client.post("/api/chat", json={"model": "tiny", "messages": [], "keep_alive": -1})
    assert loaded.json()["done_reason"] == "load" and fakes.runner.loaded.keep_alive == "-1"
    unloaded = await client.post("/api/generate", json={"model": "tiny", "keep_alive": 0})
    assert unloaded.json()["done_reason"] == "unload" and unloaded.json()["response"] == ""
    absent = await client.post("/api/generate", json={"model": "absent", "keep_alive": 0})
    assert absent.status_code == 404 and absent.json() == {"error": "model 'absent' not found"}


async def test_embed_and_the_older_embeddings(gw):
    client, fakes = gw
    data = (await client.post("/api/embed", json={"model": "tiny", "input": ["a", "b"]})).json()
    assert data["model"] == "tiny" and data["embeddings"] == [[0.5, -1.0], [0.5, -1.0]]
    assert data["prompt_eval_count"] == 2
    cut = (await client.post("/api/embed", json={"model": "tiny", "input": "a", "dimensions": 1})).json()
    assert cut["embeddings"] == [[1.0]]  # cut, then normalised again
    old = (await client.post("/api/embeddings", json={"model": "tiny", "prompt": "a"})).json()
    assert old == {"embedding": [0.5, -1.0]} and list(fakes.runner.requests[-1].inputs) == ["a"]


async def test_tags_show_and_ps(gw):
    client, _ = gw
    models = (await client.get("/api/tags")).json()["models"]
    assert [m["name"] for m in models] == ["ai/tiny:latest", "ai/tiny:v1"]
    assert models[0]["digest"] == "a" * 64 and models[0]["modified_at"] == "2023-11-14T22:13:20Z"
    assert models[0]["details"] == {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                                    "parameter_size": "1.00M", "quantization_level": "F32"}
    shown = (await client.post("/api/show", json={"name": "tiny"})).json()
    assert shown["details"]["family"] == "llama" and shown["model_info"]["llama.context_length"] == 512
    assert "completion" in shown["capabilities"]
    ps = (await client.get("/api/ps")).json()["models"]
    assert ps[0]["name"] == "ai/tiny:latest" and ps[0]["expires_at"].endswith("Z")


async def test_version_get_and_head(gw):
    client, _ = gw
    assert (await client.get("/api/version")).json()["version"].count(".") == 2
    assert (await client.head("/api/version")).status_code == 200


async def test_pull_progress_lines_and_not_streamed(gw):
    client, _ = gw
    got = lines((await client.post("/api/pull", json={"model": "tiny"})).text)
    assert got[0] == {"status": "pulling manifest"}
    layer = [line for line in got if "digest" in line]
    assert layer[0]["status"] == "pulling " + "b" * 12 and layer[-1]["completed"] == layer[-1]["total"] == 524288
    assert got[-1] == {"status": "success"}
    whole = await client.post("/api/pull", json={"model": "tiny", "stream": False})
    assert whole.json() == {"status": "success"}


async def test_delete_and_copy(gw):
    client, fakes = gw
    assert (await client.request("DELETE", "/api/delete", json={"model": "tiny"})).status_code == 200
    copied = await client.post("/api/copy", json={"source": "tiny", "destination": "tiny-backup"})
    assert copied.status_code == 200
    assert (fakes.store.tagged.repo, fakes.store.tagged.tag) == ("docker.io/ai/tiny-backup", "latest")


def test_a_token_of_no_probability_has_a_logprob_json_can_carry():
    import json
    import math

    from modelrunner.gateway.openai_convert import token_logprobs  # what Ollama's lines carry
    from modelrunner.v1 import runner_pb2

    item = runner_pb2.TokenLogprob(token="a", logprob=-math.inf, top=[runner_pb2.TopLogprob(token="b", logprob=-math.inf)])
    json.dumps(token_logprobs([item]), allow_nan=False)
