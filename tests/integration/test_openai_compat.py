"""The OpenAI surface as a demanding user of the real `openai` client meets it, against the real stack with
the tiny GGUF: parallel_tool_calls false answers one call (whole and streamed); fields that would change
the answer in a way no local model can (audio, web search, deprecated functions, a completion's suffix or
best_of, top_logprobs without logprobs, echo with logprobs, a max_tokens of 0) are 400s naming them, and
hints (user, metadata, store, service_tier, reasoning_effort, prediction) are accepted; a completion's echo
and an embedding's dimensions are honoured; the Runner's refusals name the client's field, a prompt past
the context is OpenAI's context_length_exceeded; content parts are read or refused by name."""

from __future__ import annotations

import base64
import json
import math
import struct

import httpx
import openai
import pytest

from tests.support.stack import serving

MESSAGES = [{"role": "user", "content": "hi"}]
TWO_CALLS = {  # the tiny model's answer, constrained: exactly two calls of f
    "type": "array", "minItems": 2, "maxItems": 2,
    "items": {"type": "object", "properties": {
        "name": {"enum": ["f"]},
        "arguments": {"type": "object", "properties": {"x": {"enum": [1]}}, "required": ["x"],
                      "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False},
}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
CALLS = dict(model="ai/tiny", messages=MESSAGES, max_tokens=100, temperature=0, tools=TOOLS,
             response_format={"type": "json_schema", "json_schema": {"name": "calls", "schema": TWO_CALLS}})


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    with serving(tmp_path_factory.mktemp("openai-compat"), {"ai/tiny": tiny_gguf}) as running:
        yield running


@pytest.fixture
def oai(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=60)


def streamed_calls(chunks) -> tuple[dict[int, dict], list[str]]:
    """The tool calls a stream's deltas make, by index, and its finish reasons."""
    calls: dict[int, dict] = {}
    finishes = []
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"ids": [], "name": "", "arguments": ""})
                if delta.id:
                    call["ids"].append(delta.id)
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    return calls, finishes


def test_parallel_tool_calls_false_answers_one_call(oai):
    both = oai.chat.completions.create(**CALLS)
    assert both.choices[0].finish_reason == "tool_calls" and len(both.choices[0].message.tool_calls) == 2
    one = oai.chat.completions.create(**CALLS, parallel_tool_calls=False)
    assert one.choices[0].finish_reason == "tool_calls"
    [call] = one.choices[0].message.tool_calls
    assert call.function.name == "f" and json.loads(call.function.arguments) == {"x": 1}

    calls, finishes = streamed_calls(oai.chat.completions.create(**CALLS, stream=True))
    assert sorted(calls) == [0, 1] and finishes == ["tool_calls"]
    calls, finishes = streamed_calls(oai.chat.completions.create(**CALLS, parallel_tool_calls=False, stream=True))
    assert list(calls) == [0] and finishes == ["tool_calls"]
    assert len(calls[0]["ids"]) == 1 and calls[0]["name"] == "f" and json.loads(calls[0]["arguments"]) == {"x": 1}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
        ({"function_call": {"name": "f"}}, "function_call"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ],
)
def test_chat_fields_no_local_model_can_honour_are_400_naming_them(oai, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="ai/tiny", messages=MESSAGES, **fields)
    assert caught.value.param == param and param in caught.value.message


def test_chat_hints_are_accepted(oai):
    reply = oai.chat.completions.create(
        model="ai/tiny", messages=[{"role": "developer", "content": "be brief"}, *MESSAGES], max_completion_tokens=3,
        temperature=0, seed=7, user="u-1", metadata={"k": "v"}, store=True, service_tier="auto",
        reasoning_effort="low", prediction={"type": "content", "content": "hello"}, modalities=["text"],
        parallel_tool_calls=True, function_call="auto", top_logprobs=0)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3


def test_json_schema_without_a_schema_answers_json(oai):
    reply = oai.chat.completions.create(model="ai/tiny", messages=MESSAGES, max_tokens=4, temperature=0,
                                        response_format={"type": "json_schema", "json_schema": {"name": "any"}})
    assert reply.choices[0].message.content.lstrip().startswith("{")


def test_runner_refusals_name_the_clients_field(oai):
    bad_ref = {"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model="ai/tiny", messages=MESSAGES, max_tokens=4, stream=True,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": bad_ref}})
    assert caught.value.param == "response_format.json_schema.schema"
    assert caught.value.body["message"].startswith("response_format.json_schema.schema: ")
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="ai/tiny", messages=MESSAGES, max_tokens=4, logit_bias={"99999": 5})
    assert caught.value.param.startswith("logit_bias") and "sampling" not in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_past_the_context_is_context_length_exceeded(oai, stream):
    long = "word " * 2000  # the tiny model's context holds 512 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="ai/tiny", messages=[{"role": "user", "content": long}], max_tokens=4,
                                    stream=stream)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        oai.completions.create(model="ai/tiny", prompt=long, max_tokens=4, stream=stream)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "prompt"


def test_completion_echo_starts_with_the_prompt(oai):
    plain = oai.completions.create(model="ai/tiny", prompt="Once upon", max_tokens=4, temperature=0)
    echoed = oai.completions.create(model="ai/tiny", prompt="Once upon", max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == "Once upon" + plain.choices[0].text
    streamed = oai.completions.create(model="ai/tiny", prompt="Once upon", max_tokens=4, temperature=0, echo=True,
                                      stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == echoed.choices[0].text


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"echo": True, "logprobs": 2}, "echo"),
        ({"suffix": "the end"}, "suffix"),
        ({"best_of": 2}, "best_of"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_completion_fields_no_local_model_can_honour_are_400_naming_them(oai, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.completions.create(**{"model": "ai/tiny", "prompt": "Once", **fields})
    assert caught.value.param == param


def test_embedding_dimensions_shorten_and_renormalise(oai, stack):
    full = oai.embeddings.create(model="ai/tiny", input="hello", encoding_format="float").data[0].embedding
    assert len(full) > 8
    short = oai.embeddings.create(model="ai/tiny", input="hello", dimensions=8).data[0].embedding  # base64 asked
    assert len(short) == 8 and math.fsum(v * v for v in short) == pytest.approx(1.0, abs=1e-5)
    scale = math.sqrt(math.fsum(v * v for v in full[:8]))
    assert short == pytest.approx([v / scale for v in full[:8]], abs=1e-5)
    raw = httpx.post(f"{stack.url}/v1/embeddings", timeout=60, json={
        "model": "ai/tiny", "input": "hello", "dimensions": 8, "encoding_format": "base64"}).json()
    assert len(base64.b64decode(raw["data"][0]["embedding"])) == 8 * struct.calcsize("<f")
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model="ai/tiny", input="hello", dimensions=len(full) + 1)
    assert caught.value.param == "dimensions"


def test_content_parts_are_read_or_refused_by_name(oai):
    replay = [*MESSAGES, {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
              {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    reply = oai.chat.completions.create(model="ai/tiny", messages=replay, max_tokens=2, temperature=0)
    assert reply.choices[0].finish_reason == "length"
    for content, param in [
        ([{"type": "text"}], "messages[0].content[0].text"),
        ([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
         "messages[0].content[1]"),
        ([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}], "messages[0].content[0]"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            oai.chat.completions.create(model="ai/tiny", messages=[{"role": "user", "content": content}], max_tokens=2)
        assert caught.value.param == param


def test_top_logprobs_alternatives_carry_their_own_bytes(oai):
    """An alternative that is part of a UTF-8 character shows as U+FFFD; its bytes were those of U+FFFD
    ([239, 191, 189]) instead of its own, so a client could not rebuild the text from them."""
    reply = oai.chat.completions.create(model="ai/tiny", messages=MESSAGES, max_tokens=16, temperature=0,
                                        logprobs=True, top_logprobs=10)
    alternatives = [top for item in reply.choices[0].logprobs.content for top in item.top_logprobs]
    assert alternatives
    for top in alternatives:
        assert top.bytes, top
        if top.token != "\ufffd":
            assert bytes(top.bytes).decode() == top.token, top
    partial = [top for top in alternatives if top.token == "\ufffd"]
    assert partial and all(bytes(top.bytes) != "\ufffd".encode() for top in partial), partial
