"""The gateway in front of the real Store, Distribution and Runner processes, driven by the real
`openai` client (sync and async, streamed and not), raw HTTP checks of SSE framing and error statuses,
the DMR routes, trace propagation, and a bounded schemathesis run against the live /openapi.json."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.packaging import package_over_http
from tests.support.stack import Stack

TRACEPARENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACEPARENT_TRACE_ID}-00f067aa0ba902b7-01"
CHAT = {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    workdir = tmp_path_factory.mktemp("gateway-live")
    running = Stack(workdir).start()
    try:
        running.wait_healthy()
        reply = package_over_http(running.url, tiny_gguf, "ai/tiny", timeout=60)
        assert reply.status_code == 200, reply.text
        yield running
    finally:
        codes = running.stop()
    assert codes["gateway"] == 0, running.log("gateway").read_text()[-3000:]


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)


def test_openai_sync_chat(client):
    reply = client.chat.completions.create(model="ai/tiny", messages=CHAT["messages"], max_tokens=8, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str)
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.model == "ai/tiny:latest"


def test_the_next_turn_of_a_chat_reuses_the_cached_conversation(client):
    first = client.chat.completions.create(model="ai/tiny", messages=CHAT["messages"], max_tokens=8, temperature=0)
    turn = [*CHAT["messages"], {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "and then?"}]
    second = client.chat.completions.create(model="ai/tiny", messages=turn, max_tokens=8, temperature=0)
    # the first request's prompt is at least in the slot it left; only the new turn is prefilled
    assert first.usage.prompt_tokens <= second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens
    again = client.chat.completions.create(model="ai/tiny", messages=turn, max_tokens=8, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1  # all but the last
    assert again.choices[0].message.content == second.choices[0].message.content


def test_openai_sync_chat_streaming(client):
    stream = client.chat.completions.create(model="ai/tiny", messages=CHAT["messages"], max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish and finish[-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    reply = client.chat.completions.create(model="ai/tiny", messages=CHAT["messages"], max_tokens=8, temperature=0)
    assert text == reply.choices[0].message.content  # greedy: streamed and whole agree


def test_openai_completions_and_embeddings(client):
    completion = client.completions.create(model="ai/tiny", prompt="Once upon", max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason in ("stop", "length") and completion.usage.completion_tokens > 0
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="ai/tiny", prompt="Once upon", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == completion.choices[0].text
    embedded = client.embeddings.create(model="ai/tiny", input=["hello", "world"])  # SDK asks for base64
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) > 0
    as_float = client.embeddings.create(model="ai/tiny", input="hello", encoding_format="float")
    assert as_float.data[0].embedding == pytest.approx(embedded.data[0].embedding, abs=1e-5)


def test_openai_tool_calls(client):
    """Tools offered, and a JSON schema that makes even the random tiny model answer with a call."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"enum": ["get_weather"]},
            "arguments": {"type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"],
                          "additionalProperties": False},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    common = dict(model="ai/tiny", messages=CHAT["messages"], max_tokens=120, temperature=0, tools=tools,
                  response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": schema}})
    reply = client.chat.completions.create(**common)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    chunks = list(client.chat.completions.create(**common, stream=True))
    streamed = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert streamed and streamed[0].function.name == "get_weather"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


async def test_openai_async_client(stack):
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/engines/v1", api_key="unused", max_retries=0)
    reply = await client.chat.completions.create(model="ai/tiny", messages=CHAT["messages"], max_tokens=6, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length")
    stream = await client.chat.completions.create(model="ai/tiny", messages=CHAT["messages"], max_tokens=6,
                                                  temperature=0, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == reply.choices[0].message.content
    embedded = await client.embeddings.create(model="ai/tiny", input="hi")
    assert embedded.data[0].embedding
    await client.close()


def test_openai_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="ai/absent", messages=CHAT["messages"])
    assert "modelrunner pull ai/absent:latest" in str(caught.value)


def test_raw_sse_framing(stack):
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=60) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(reply.iter_bytes()).decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = raw[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize(
    ("request_kwargs", "status", "field"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, None),
        ({"json": {**CHAT, "temperature": "hot"}}, 400, "temperature"),
        ({"json": {"model": "ai/tiny"}}, 400, "messages"),
        ({"json": {**CHAT, "model": "NOT A NAME"}}, 400, "model"),
        ({"json": {**CHAT, "model": "ai/absent"}}, 404, None),
        ({"json": {**CHAT, "messages": [{"role": "user", "content": "x" * (17 * 1024 * 1024)}]}}, 413, None),
    ],
)
def test_error_statuses(stack, request_kwargs, status, field):
    reply = httpx.post(f"{stack.url}/v1/chat/completions", timeout=60, **request_kwargs)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in error["message"]
    if field:
        assert error["param"] == field


def test_service_down_is_503_naming_it(tmp_path):
    """A gateway whose services are not running answers 503 at once, naming the service."""
    lone = Stack(tmp_path).start(["gateway"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                started = time.monotonic()
                reply = httpx.post(f"{lone.url}/v1/chat/completions", json=CHAT, timeout=10)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert reply.status_code == 503 and "runner service" in reply.json()["error"]["message"]
        assert time.monotonic() - started < 5
        health = httpx.get(f"{lone.url}/healthz", timeout=10)
        assert health.status_code == 503 and "store" in health.json()["error"]["message"]
    finally:
        assert lone.stop()["gateway"] == 0


def test_dmr_routes(stack):
    url = stack.url
    models = httpx.get(f"{url}/models").json()
    tiny = next(m for m in models if "docker.io/ai/tiny:latest" in m["tags"])
    assert isinstance(tiny["created"], int) and tiny["config"]["format"] == "gguf"
    assert httpx.get(f"{url}/models/ai/tiny").json()["id"] == tiny["id"]
    assert httpx.post(f"{url}/models/ai/tiny/tag", params={"repo": "ai/tiny-copy", "tag": "v1"}).status_code == 201
    assert httpx.delete(f"{url}/models/ai/tiny-copy:v1").json() == [{"Untagged": "docker.io/ai/tiny-copy:v1"}]
    missing = httpx.get(f"{url}/models/ai/absent")
    assert missing.status_code == 404
    httpx.post(f"{url}/v1/completions", json={"model": "ai/tiny", "prompt": "x", "max_tokens": 1}, timeout=60)
    ps = httpx.get(f"{url}/engines/ps").json()
    assert isinstance(ps, list) and any("tiny" in r["model_name"] for r in ps)
    assert httpx.get(f"{url}/engines/df").json()["models_disk_usage"] > 0
    assert httpx.get(f"{url}/engines/status").status_code == 200
    configured = httpx.post(f"{url}/engines/_configure", json={"model": "ai/tiny", "context-size": 256})
    assert configured.status_code == 202, configured.text
    assert any(s["context-size"] == 256 for s in httpx.get(f"{url}/engines/_configure").json())
    assert "# TYPE" in httpx.get(f"{url}/metrics").text


def test_trace_continues_through_each_grpc_hop(stack):
    reply = httpx.post(f"{stack.url}/v1/chat/completions", json=CHAT, headers={"traceparent": TRACEPARENT}, timeout=60)
    assert reply.status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runner_spans = [json.loads(line) for line in stack.trace_file("runner").read_text().splitlines()] \
            if stack.trace_file("runner").exists() else []
        if any(s["trace_id"] == TRACEPARENT_TRACE_ID for s in runner_spans):
            break
        time.sleep(0.2)
    gateway_spans = [json.loads(line) for line in stack.trace_file("gateway").read_text().splitlines()]
    server = next(s for s in gateway_spans if s["trace_id"] == TRACEPARENT_TRACE_ID and s["kind"] == "SERVER")
    assert server["parent_id"] == "00f067aa0ba902b7"
    assert any(s["trace_id"] == TRACEPARENT_TRACE_ID and s["kind"] == "SERVER" for s in runner_spans)


def test_schemathesis_against_live_openapi(stack):
    """Bounded property-based run over the cheap, side-effect-free routes: no 5xx, answers conform."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "run", f"{stack.url}/openapi.json",
         "--include-path-regex", r"^/(v1/models|engines/(v1|llama\.cpp/v1)/models|models$|engines/(ps|df|status|_configure)$|healthz)",
         "--exclude-method", "POST", "--exclude-method", "DELETE",
         "-n", "20", "--phases", "examples,fuzzing", "--generation-deterministic",
         "-c", "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"],
        capture_output=True, text=True, timeout=240, cwd=stack.workdir,
    )
    assert result.returncode == 0, result.stdout[-6000:]
