"""Hostile and unusual requests against the Runner's gRPC surface on the tiny GGUF: every bad field is
INVALID_ARGUMENT naming it, values users send from habit are served, nothing is INTERNAL or UNKNOWN,
and no rejection leaves a counter behind."""

from __future__ import annotations

import asyncio
import json
import math
import threading

import grpc
import pytest

from modelrunner.common.errors import ServiceError
from modelrunner.runner.service import RunnerService
from modelrunner.v1 import runner_pb2
from tests.support.runner_doubles import FakeClock, chat_request, make_manager

INT32_MAX = 2**31 - 1


async def generate(stub, request) -> list[runner_pb2.GenerateChunk]:
    return [c async for c in stub.Generate(request, timeout=60)]


async def status_of(stub, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generate(stub, request)
    return err.value.code(), err.value.details()


def with_sampling(**fields) -> runner_pb2.GenerateRequest:
    request = chat_request(max_tokens=4)
    for name, value in fields.items():
        if name == "logit_bias":
            request.sampling.logit_bias.update(value)
        elif name == "stop":
            request.sampling.stop.extend(value)
        else:
            setattr(request.sampling, name, value)
    return request


def with_request(**fields) -> runner_pb2.GenerateRequest:
    request = chat_request(max_tokens=4)
    for name, value in fields.items():
        if name == "tools_json":
            request.chat.tools_json = value
        elif name == "response_format":
            request.response_format.CopyFrom(value)
        elif name == "messages":
            del request.chat.messages[:]
            request.chat.messages.extend(value)
        else:
            setattr(request, name, value)
    return request


BAD_REQUESTS = [
    (with_sampling(temperature=math.nan), "sampling.temperature"),
    (with_sampling(temperature=math.inf), "sampling.temperature"),
    (with_sampling(temperature=-1), "sampling.temperature"),
    (with_sampling(top_p=0), "sampling.top_p"),
    (with_sampling(top_p=1.5), "sampling.top_p"),
    (with_sampling(top_p=math.nan), "sampling.top_p"),
    (with_sampling(min_p=-0.1), "sampling.min_p"),
    (with_sampling(min_p=math.nan), "sampling.min_p"),
    (with_sampling(top_k=-1), "sampling.top_k"),
    (with_sampling(seed=-2), "sampling.seed"),
    (with_sampling(repeat_penalty=0), "sampling.repeat_penalty"),
    (with_sampling(repeat_penalty=math.inf), "sampling.repeat_penalty"),
    (with_sampling(presence_penalty=math.nan), "sampling.presence_penalty"),
    (with_sampling(frequency_penalty=3), "sampling.frequency_penalty"),
    (with_sampling(max_tokens=-1), "sampling.max_tokens"),
    (with_sampling(logit_bias={5: math.nan}), "sampling.logit_bias[5]"),
    (with_sampling(logit_bias={5: -math.inf}), "sampling.logit_bias[5]"),
    (with_sampling(logit_bias={1000: 1.0}), "sampling.logit_bias[1000]"),  # the tiny vocabulary has 256
    (with_sampling(logit_bias={-1: 1.0}), "sampling.logit_bias[-1]"),
    (with_sampling(stop=["x"] * 17), "sampling.stop"),
    (with_sampling(stop=["x" * 257]), "sampling.stop[0]"),
    (with_request(top_logprobs=21, logprobs=True), "top_logprobs"),
    (with_request(top_logprobs=-1), "top_logprobs"),
    (with_request(messages=[]), "chat.messages"),
    (with_request(messages=[runner_pb2.ChatMessage(role="robot", content="hi")]), "chat.messages[0].role"),
    (with_request(response_format=runner_pb2.ResponseFormat(type="yaml")), "response_format.type"),
    (with_request(response_format=runner_pb2.ResponseFormat(type="json_schema")), "response_format.json_schema"),
    (
        with_request(response_format=runner_pb2.ResponseFormat(type="json_schema", json_schema="{not json")),
        "response_format.json_schema",
    ),
    (
        with_request(response_format=runner_pb2.ResponseFormat(type="json_schema", json_schema='{"type": "string", "pattern": "a+"}')),
        "response_format.json_schema: pattern",
    ),
    (
        with_request(response_format=runner_pb2.ResponseFormat(type="json_schema", json_schema="[" * 100_000)),
        "response_format.json_schema",
    ),
    (with_request(tools_json="[" * 100_000), "chat.tools_json"),
    (with_request(tools_json='{"type": "function"}'), "chat.tools_json"),
    (runner_pb2.GenerateRequest(prompt="hi"), "model"),
    (with_request(keep_alive="soon"), "keep_alive"),
    (runner_pb2.GenerateRequest(model="a", prompt="a\0b"), "prompt"),  # a NUL aborted the engine
    (with_request(messages=[runner_pb2.ChatMessage(role="user", content="a\0b")]), "chat.messages[0].content"),
]


@pytest.mark.parametrize("request_, field", BAD_REQUESTS, ids=[f for _, f in BAD_REQUESTS])
async def test_each_bad_field_is_invalid_argument_naming_it(runner, request_, field):
    stub, _ = runner
    code, details = await status_of(stub, request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(field), details


async def test_bad_embed_inputs_are_named(runner):
    stub, _ = runner
    for request, field in [
        (runner_pb2.EmbedRequest(model="a"), "inputs"),
        (runner_pb2.EmbedRequest(model="a", inputs=["ok", ""]), "inputs[1]"),
        (runner_pb2.EmbedRequest(model="a", inputs=["x"] * 2049), "inputs"),
        (runner_pb2.EmbedRequest(inputs=["x"]), "model"),
        (runner_pb2.EmbedRequest(model="a", inputs=["ok", "a\0b"]), "inputs[1]"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Embed(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(field), err.value.details()


async def test_values_sent_from_habit_are_served(runner):
    stub, _ = runner
    random_seed = await generate(stub, with_sampling(seed=-1, temperature=0.8, ignore_eos=True))
    huge = await generate(stub, with_sampling(max_tokens=INT32_MAX, top_k=INT32_MAX))
    assert random_seed[-1].finish_reason == "length"
    assert huge[-1].finish_reason in ("stop", "length")  # at the latest when the 256-token context is full
    assert huge[-1].usage.prompt_tokens + huge[-1].usage.completion_tokens <= 256


async def test_rejected_requests_give_back_every_place(runner):
    """80 requests rejected at each stage (before and after the model is taken) leave the model
    serving: the issue's 80 x 400 then 429 "queue full" forever."""
    stub, manager = runner
    rejected = [
        with_sampling(logit_bias={1000: 1.0}),
        with_request(response_format=runner_pb2.ResponseFormat(type="json_schema", json_schema='{"type": "string", "pattern": "a"}')),
        runner_pb2.GenerateRequest(model="a", prompt="x" * 400),  # longer than the context
        with_sampling(seed=-5),
    ]
    for i in range(80):
        code, _ = await status_of(stub, rejected[i % len(rejected)])
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    chunks = await generate(stub, chat_request(max_tokens=3, ignore_eos=True))
    assert chunks[-1].finish_reason == "length"
    [entry] = manager.loaded()
    assert (entry.scheduler.in_flight, entry.scheduler.busy_slots, entry.leases) == (0, 0, 0)


async def test_json_answer_ends_cleanly_when_the_grammar_allows_nothing_more(runner):
    """A finished JSON value with end of generation banned (ignore_eos) used to feed llama.cpp an
    illegal token; now the answer just ends."""
    stub, _ = runner
    request = chat_request(max_tokens=50, ignore_eos=True)
    request.response_format.CopyFrom(runner_pb2.ResponseFormat(type="json_schema", json_schema='{"const": 1}'))
    chunks = await generate(stub, request)
    assert chunks[-1].finish_reason == "stop"
    assert json.loads("".join(c.text for c in chunks)) == 1
    again = await generate(stub, chat_request(max_tokens=2))  # the Runner still serves
    assert again[-1].finish_reason


async def test_a_schema_with_max_length_5000_constrains_the_answer(runner):
    stub, _ = runner
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 5000}, "n": {"type": "integer", "minimum": 0}},
        "required": ["title", "n"],
        "additionalProperties": False,
    }
    request = chat_request(max_tokens=0)  # until the context is full or the value ends
    request.response_format.CopyFrom(runner_pb2.ResponseFormat(type="json_schema", json_schema=json.dumps(schema)))
    chunks = await generate(stub, request)
    text = "".join(c.text for c in chunks)
    assert text.startswith('{') and text.lstrip('{ ').startswith('"title"'), text
    if chunks[-1].finish_reason == "stop":
        value = json.loads(text)
        assert set(value) == {"title", "n"} and value["n"] >= 0


async def test_a_context_too_large_for_the_memory_budget_is_refused_before_loading(files, tmp_path):
    manager = make_manager(files, tmp_path, FakeClock(), memory_budget=64 * 1024 * 1024)
    service = RunnerService(manager)
    await service.Configure(runner_pb2.ModelSettings(model="a", context_size=INT32_MAX), None)
    with pytest.raises(ServiceError) as err:
        await service.LoadModel(runner_pb2.LoadModelRequest(model="a"), None)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "memory budget" in err.value.message and "context size" in err.value.message
    assert manager.loaded() == []
    await manager.close()


@pytest.mark.parametrize(
    "settings, field",
    [
        (runner_pb2.ModelSettings(model="a", parallel=100_000), "parallel"),
        (runner_pb2.ModelSettings(model="a", runtime_flags=["--batch-size", "1000000000"]), "runtime_flags (--batch-size)"),
        (runner_pb2.ModelSettings(model="a", runtime_flags=["--parallel=0"]), "parallel"),
        (runner_pb2.ModelSettings(model="a", gpu_layers=-2), "gpu_layers"),
    ],
)
async def test_settings_the_engine_cannot_take_are_refused_before_they_are_saved(runner, settings, field):
    stub, manager = runner
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Configure(settings, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field), err.value.details()
    assert manager.settings.all() == {}


async def test_a_prompt_being_tokenized_does_not_hold_up_other_requests(runner, monkeypatch):
    """Rendering and tokenizing run off the event loop: a prompt of megabytes (seconds of tokenizing)
    must not stall every other stream of the model. The gate holds one prompt's tokenizing until the
    other request has been served; were it on the loop, nothing else could run meanwhile."""
    stub, manager = runner
    await stub.LoadModel(runner_pb2.LoadModelRequest(model="a"), timeout=60)
    model = manager.loaded()[0].model
    tokenizing, release = threading.Event(), threading.Event()
    original = model.tokenize

    def gated(text: str, **kwargs) -> list[int]:
        if "held prompt" in text:
            tokenizing.set()
            release.wait(10)
        return original(text, **kwargs)

    monkeypatch.setattr(model, "tokenize", gated)
    held = chat_request(max_tokens=2)
    held.chat.messages[0].content = "held prompt"
    held_call = asyncio.ensure_future(generate(stub, held))
    try:
        assert await asyncio.to_thread(tokenizing.wait, 30)
        other = await generate(stub, chat_request(max_tokens=2))
        assert other[-1].finish_reason and not held_call.done()
    finally:
        release.set()
    assert (await held_call)[-1].finish_reason
