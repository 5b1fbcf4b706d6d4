"""The Anthropic Messages API through the real `anthropic` client, over HTTP, against the real stack
(Store, Distribution, Runner, gateway processes) with the tiny GGUF, and Gemma 3 270M where the text
matters."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.support.stack import serving
from tests.support.packaging import package

USER = [{"role": "user", "content": "hi"}]
GREEDY = {"model": "ai/tiny", "extra_body": {"temperature": 0}}  # the SDK has no sampling arguments
# Only "Paris" fits the schema, so a forced call from even the random tiny model is deterministic.
WEATHER = {"name": "get_weather", "description": "The weather in a city", "input_schema": {
    "type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    with serving(tmp_path_factory.mktemp("anthropic-api"), {"ai/tiny": tiny_gguf}) as running:
        yield running


@pytest.fixture
def client(stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="unused", max_retries=0)


def first_new_char(text: str) -> int:
    """The index of the first printable ASCII character that does not occur earlier in `text`."""
    return next(i for i, c in enumerate(text) if i and c.isascii() and c.isprintable() and c not in text[:i])


def test_message(client):
    reply = client.messages.create(**GREEDY, max_tokens=8, system="be brief", messages=USER)
    assert reply.type == "message" and reply.role == "assistant" and reply.model == "ai/tiny:latest"
    assert reply.stop_reason in ("end_turn", "max_tokens") and reply.content[0].type == "text"
    assert reply.usage.output_tokens > 0 and reply.usage.input_tokens + reply.usage.cache_read_input_tokens > 0


def test_streamed_message_matches_the_whole_one(client):
    with client.messages.stream(**GREEDY, max_tokens=8, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    whole = client.messages.create(**GREEDY, max_tokens=8, messages=USER)
    assert text == final.content[0].text == whole.content[0].text  # greedy: streamed and whole agree
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == \
        whole.usage.input_tokens + whole.usage.cache_read_input_tokens


def test_the_anthropic_base_url_serves_it_too(stack):
    prefixed = anthropic.Anthropic(base_url=f"{stack.url}/anthropic", api_key="unused", max_retries=0)
    assert prefixed.messages.create(**GREEDY, max_tokens=4, messages=USER).content[0].type == "text"


def test_raw_event_stream(stack):
    body = {**GREEDY, "max_tokens": 6, "messages": USER, "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/messages", json=body, timeout=60) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(reply.iter_bytes()).decode()
    events = [block.split("\n") for block in raw.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert all(json.loads(lines[1].removeprefix("data: "))["type"] == name for name, lines in zip(names, events))
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_tool_round_trip(client):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "tool", "name": "get_weather"}
    first = client.messages.create(**GREEDY, max_tokens=64, tools=[WEATHER], tool_choice=forced, messages=question)
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"} and use.id
    with client.messages.stream(**GREEDY, max_tokens=64, tools=[WEATHER], tool_choice=forced, messages=question) as s:
        streamed = s.get_final_message()
    assert [(b.name, b.input) for b in streamed.content if b.type == "tool_use"] == [("get_weather", {"city": "Paris"})]
    turn = [*question, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]}]
    second = client.messages.create(**GREEDY, max_tokens=8, tools=[WEATHER], messages=turn)
    assert second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    counted = client.messages.count_tokens(model="ai/tiny", tools=[WEATHER], messages=turn)
    assert counted.input_tokens == second.usage.input_tokens + second.usage.cache_read_input_tokens


def test_count_tokens_counts_what_generation_prefills(client):
    messages = [{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}]}]
    counted = client.messages.count_tokens(model="ai/tiny", system="be brief", messages=messages)
    reply = client.messages.create(**GREEDY, max_tokens=2, system="be brief", messages=messages)
    assert counted.input_tokens == reply.usage.input_tokens + reply.usage.cache_read_input_tokens > 0
    longer = client.messages.count_tokens(model="ai/tiny", system="be brief and kind", messages=messages)
    assert longer.input_tokens > counted.input_tokens


def test_stop_sequences(client):
    free = client.messages.create(**GREEDY, max_tokens=24, messages=USER).content[0].text
    cut = first_new_char(free)
    stopped = client.messages.create(**GREEDY, max_tokens=24, messages=USER, stop_sequences=[free[cut]])
    assert stopped.content[0].text == free[:cut]
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == free[cut]
    with client.messages.stream(**GREEDY, max_tokens=24, messages=USER, stop_sequences=[free[cut]]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == free[cut]


def test_structured_output_follows_the_schema(client):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
              "additionalProperties": False}
    reply = client.messages.create(**GREEDY, max_tokens=32, messages=USER,
                                   output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(reply.content[0].text)["answer"] in ("yes", "no") and reply.stop_reason == "end_turn"


def test_errors_are_anthropic_errors(client, stack):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**GREEDY, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "image blocks are not supported" in caught.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="ai/absent", max_tokens=4, messages=USER)
    assert "modelrunner pull ai/absent:latest" in missing.value.body["error"]["message"]
    reply = httpx.post(f"{stack.url}/v1/messages", json={"model": "ai/tiny", "messages": USER}, timeout=30)
    assert reply.status_code == 400
    assert reply.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": reply.json()["error"]["message"]}}
    assert reply.json()["error"]["message"].startswith("max_tokens")
    counted = httpx.post(f"{stack.url}/v1/messages/count_tokens", json={"model": "ai/absent", "messages": USER},
                         timeout=30)
    assert counted.status_code == 404 and counted.json()["error"]["type"] == "not_found_error"


@pytest.mark.slow
def test_gemma_answers_and_stops_at_a_stop_sequence(stack, gemma_gguf):
    package(f"127.0.0.1:{stack.ports['store']}", gemma_gguf, "ai/gemma3")
    client = anthropic.Anthropic(base_url=stack.url, api_key="unused", max_retries=0)
    question = [{"role": "user", "content": "Write one sentence about the sea."}]
    # Greedy answers are compared below, so every one of them must find the prompt in the cache alike: a
    # cold prefill computes the prompt's last token among the others, a warm one alone, and on some CPUs
    # (AVX-512 here) llama.cpp's kernels round those differently enough to flip a later argmax.
    client.messages.create(model="ai/gemma3", extra_body={"temperature": 0}, max_tokens=1, messages=question)
    free = client.messages.create(model="ai/gemma3", extra_body={"temperature": 0}, max_tokens=32, messages=question)
    text = free.content[0].text
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    stopped = client.messages.create(model="ai/gemma3", extra_body={"temperature": 0}, max_tokens=32, messages=question,
                                     stop_sequences=[stop])
    assert stopped.content[0].text == text[: text.index(stop)]
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == stop
    with client.messages.stream(model="ai/gemma3", extra_body={"temperature": 0}, max_tokens=32,
                                messages=question) as stream:
        assert "".join(stream.text_stream) == text
