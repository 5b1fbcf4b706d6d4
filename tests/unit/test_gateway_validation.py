"""What the gRPC contract cannot carry or the engine cannot use is a 400 naming the field (`param`),
never a 500: NaN and infinities, integers past int32/int64, ranges, counts and lengths, shapes."""

from __future__ import annotations

import json

import pytest

from tests.support.gateway_fakes import gateway_client

CHAT = {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}]}
EMBED = {"model": "ai/tiny"}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture
async def gw():
    async with gateway_client() as pair:
        yield pair


async def post_raw(client, path: str, raw: str):
    return await client.post(path, content=raw.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"model": "ai/tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "temperature"),
        ('{"model": "ai/tiny", "messages": [{"role": "user", "content": "x"}], "top_p": Infinity}', "top_p"),
        ('{"model": "ai/tiny", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"1000": NaN}}',
         "logit_bias.1000"),
        ('{"model": "ai/tiny", "messages": [{"role": "user", "content": "x"}], "presence_penalty": -Infinity}',
         "presence_penalty"),
        ('{"model": "ai/tiny", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": '
         '"json_schema", "json_schema": {"schema": {"type": "number", "maximum": NaN}}}}',
         "response_format.json_schema.schema.maximum"),
        ('{"model": "ai/tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", '
         '"function": {"name": "f", "parameters": {"type": "object", "x": "\\ud800"}}}]}',
         "tools[0].function.parameters.x"),
    ],
)
async def test_nan_infinity_and_lone_surrogates_are_400(gw, raw: str, param: str):
    """Python's JSON parser accepts the NaN literal; the proto and llama.cpp cannot use it."""
    client, fakes = gw
    before = len(fakes.runner.requests)
    reply = await post_raw(client, "/v1/chat/completions", raw)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param
    assert len(fakes.runner.requests) == before  # refused before any gRPC call


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 99999999999}, "max_tokens"),
        ({"max_completion_tokens": 2**31}, "max_completion_tokens"),
        ({"top_k": 99999999999}, "top_k"),
        ({"seed": 2**63}, "seed"),
        ({"seed": -2}, "seed"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"repeat_penalty": -1}, "repeat_penalty"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"n": 2}, "n"),
        ({"logit_bias": {"-5": 1}}, "logit_bias"),
        ({"logit_bias": {"99999999999": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 1000}}, "logit_bias.5"),
        ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
        ({"stop": "x" * 257}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}] * 4097}, "messages"),
        ({"messages": [{"content": "x"}]}, "messages[0].role"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [TOOL] * 129}, "tools"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"keep_alive": "nan"}, "keep_alive"),
    ],
)
async def test_out_of_range_or_misshapen_is_400_naming_the_field(gw, extra: dict, param: str):
    client, _ = gw
    reply = await client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and param.split(".")[0].split("[")[0] in error["message"], error


async def test_deeply_nested_schema_is_400_not_a_recursion_error(gw):
    client, _ = gw
    schema: dict = {}
    for _ in range(200):
        schema = {"items": schema}
    reply = await client.post("/v1/chat/completions", json={
        **CHAT, "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}})
    error = reply.json()["error"]
    assert reply.status_code == 400 and "nested deeper than 64" in error["message"]
    assert error["param"].startswith("response_format.json_schema.schema.items.items")


async def test_habits_of_llama_cpp_users_are_accepted(gw):
    """seed -1 is llama.cpp's "random"; an empty stop string is ignored, as there; tools keep their extras."""
    client, fakes = gw
    tool = {**TOOL, "function": {**TOOL["function"], "description": "d", "x-extra": 1}}
    reply = await client.post("/v1/chat/completions", json={
        **CHAT, "seed": -1, "stop": ["", "\n"], "max_tokens": 2**31 - 1, "top_k": 0, "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    assert reply.status_code == 200, reply.text
    sent = fakes.runner.requests[-1]
    assert sent.sampling.seed == -1 and list(sent.sampling.stop) == ["\n"] and sent.sampling.max_tokens == 2**31 - 1
    assert json.loads(sent.chat.tools_json) == [tool]
    assert json.loads(sent.chat.tool_choice_json) == {"type": "function", "function": {"name": "get_weather"}}


async def test_completion_bounds(gw):
    client, _ = gw
    for extra, param in (({"top_k": 2**31}, "top_k"), ({"logprobs": 21}, "logprobs"), ({"prompt": 5}, "prompt")):
        reply = await client.post("/v1/completions", json={"model": "ai/tiny", "prompt": "x", **extra})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([], "at least one"),
        ("", "empty"),
        (["a", ""], "empty"),
        (["a"] * 2049, "at most 2048"),
        ([1, 2, 3], "token id arrays"),
        ([[1, 2], [3]], "token id arrays"),
        ([{"text": "a"}], "string"),
        (None, "string"),
    ],
)
async def test_embedding_inputs(gw, inputs, needle: str):
    client, fakes = gw
    reply = await client.post("/v1/embeddings", json={**EMBED, "input": inputs})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == "input" and needle in error["message"], error


async def test_embedding_dimensions_must_be_positive(gw):
    client, _ = gw
    reply = await client.post("/v1/embeddings", json={**EMBED, "input": "a", "dimensions": 0})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "dimensions"



def test_logprobs_of_banned_tokens_stay_json():
    """A token a grammar or a bias bans has logprob -inf: answered as OpenAI's floor, JSON can carry it."""
    from modelrunner.gateway import openai_convert as convert
    from modelrunner.v1 import runner_pb2

    items = [runner_pb2.TokenLogprob(token="a", logprob=float("-inf"),
                                     top=[runner_pb2.TopLogprob(token="b", logprob=float("nan"))])]
    chat, completion = convert.chat_logprobs(items), convert.completion_logprobs(items)
    json.dumps([chat, completion], allow_nan=False)
    assert chat["content"][0]["logprob"] == chat["content"][0]["top_logprobs"][0]["logprob"] == convert.LOGPROB_FLOOR
    assert completion["token_logprobs"] == [convert.LOGPROB_FLOOR] and completion["top_logprobs"] == [{"b": -9999.0}]
