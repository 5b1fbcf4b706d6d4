"""The OpenAI routes (/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings), each a gRPC
call to the Store or the Runner. Mounted under /v1, /engines/v1 and /engines/llama.cpp/v1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from modelrunner.gateway import forced_tools
from modelrunner.gateway import openai_convert as convert
from modelrunner.gateway.backends import Backends, ServerStream, UpstreamError
from modelrunner.gateway.errors import from_upstream
from modelrunner.gateway.openai_models import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from modelrunner.gateway.settings import GatewayOptions
from modelrunner.gateway.streaming import SSE_DONE, cancel_on_disconnect, peek, sse_event, sse_response
from modelrunner.v1 import runner_pb2, store_pb2

PREFIXES = ("/v1", "/engines/v1", "/engines/llama.cpp/v1")


def _backends(request: Request) -> Backends:
    return request.app.state.backends


def _options(request: Request) -> GatewayOptions:
    return request.app.state.options


def model_entry(model, tag: str) -> dict:
    config = model.config
    return {
        "id": convert.familiar(tag),
        "object": "model",
        "created": int(model.created),
        "owned_by": "docker",
        "dmr": {
            "context_window": config.context_size,
            "architecture": config.architecture,
            "parameters": config.parameters,
            "quantization": config.quantization,
            "size": config.size,
        },
    }


async def _start(request: Request, stream: ServerStream, grpc_request: runner_pb2.GenerateRequest,
                 model: convert.ModelName):
    """The first chunk of a generation, with an error before it answered as an HTTP status naming the
    client's field (the tool, when a forced call's schema was refused), not the contract's."""
    try:
        return await cancel_on_disconnect(request, peek(stream))
    except UpstreamError as error:
        refused = forced_tools.blame(from_upstream(error, model=model.familiar), grpc_request)
        raise convert.blame(refused, "messages" if grpc_request.HasField("chat") else "prompt") from None


async def _collect(first, rest: AsyncIterator, stream: ServerStream) -> convert.Collected:
    collected = convert.Collected()
    try:
        async for chunk in _chain(first, rest):
            collected.add(chunk)
    finally:
        stream.cancel()
    return collected


async def _generate(request: Request, grpc_request: runner_pb2.GenerateRequest, model: convert.ModelName):
    stream = _backends(request).runner.stream("Generate", grpc_request)
    first, rest = await _start(request, stream, grpc_request, model)
    return stream, first, rest


def _served(collected_model: str, model: convert.ModelName) -> str:
    return convert.familiar(collected_model) if collected_model else model.familiar


async def _streamed(events: AsyncIterator[bytes], stream: ServerStream, model: convert.ModelName) -> AsyncIterator[bytes]:
    """An SSE answer: `events`, then [DONE]. An upstream error after the first event can no longer change
    the HTTP status, so it ends the answer as an OpenAI error event; the gRPC stream is cancelled however
    the answer ends (the client going away included)."""
    try:
        async with aclosing(events):
            async for event in events:
                yield event
        yield SSE_DONE
    except UpstreamError as error:
        yield sse_event(from_upstream(error, model=model.familiar).body())
    finally:
        stream.cancel()


async def _chat_events(first, rest, model: convert.ModelName, body: ChatCompletionRequest) -> AsyncIterator[bytes]:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    head = {"id": convert.new_id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": _served(first.model if first else "", model)}

    def chunk(delta: dict, finish_reason: str | None = None, logprobs=None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return sse_event({**head, "choices": [choice], **({"usage": None} if include_usage else {})})

    final = runner_pb2.GenerateChunk()
    yield chunk({"role": "assistant", "content": ""})
    async for item in _chain(first, rest):
        if item.text or item.logprobs:
            lp = convert.chat_logprobs(item.logprobs) if body.logprobs else None
            yield chunk({"content": item.text}, logprobs=lp)
        if calls := convert.allowed_calls(item.tool_calls, body):
            yield chunk({"tool_calls": convert.tool_calls(calls, indexed=True)})
        if item.finish_reason:
            final = item
    yield chunk({}, finish_reason=final.finish_reason or "stop")
    if include_usage:
        yield sse_event({**head, "choices": [], "usage": convert.usage(final.usage)})


async def _completion_events(first, rest, model: convert.ModelName, body: CompletionRequest) -> AsyncIterator[bytes]:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    head = {"id": convert.new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
            "model": _served(first.model if first else "", model)}
    offset = 0
    final = runner_pb2.GenerateChunk()
    if echo := convert.echoed(body):
        yield sse_event({**head, "choices": [{"index": 0, "text": echo, "logprobs": None, "finish_reason": None}],
                         **({"usage": None} if include_usage else {})})
    async for item in _chain(first, rest):
        logprobs = None
        if body.logprobs is not None:
            logprobs = convert.completion_logprobs(item.logprobs, offset)
        offset += len(item.text)
        if item.finish_reason:
            final = item
        choice = {"index": 0, "text": item.text, "logprobs": logprobs, "finish_reason": item.finish_reason or None}
        yield sse_event({**head, "choices": [choice], **({"usage": None} if include_usage else {})})
    if include_usage:
        yield sse_event({**head, "choices": [], "usage": convert.usage(final.usage)})


async def _chain(first, rest: AsyncIterator) -> AsyncIterator:
    """The peeked first item (None when the stream was empty), then the rest."""
    if first is not None:
        yield first
    async for item in rest:
        yield item


def build_router() -> APIRouter:
    router = APIRouter(tags=["OpenAI"])

    @router.get("/models", summary="List models (one entry per tag)")
    async def list_models(request: Request) -> JSONResponse:
        reply = await _backends(request).store.unary(
            "ListModels", store_pb2.ListModelsRequest(), _options(request).request_timeout
        )
        return JSONResponse({"object": "list", "data": [model_entry(m, tag) for m in reply.models for tag in m.tags]})

    @router.get("/models/{model_id:path}", summary="One model")
    async def get_model(request: Request, model_id: str) -> dict:
        model = convert.resolve_model(model_id, "model_id")
        try:
            reply = await _backends(request).store.unary(
                "GetModel", store_pb2.GetModelRequest(name=model.qualified), _options(request).request_timeout
            )
        except UpstreamError as error:
            raise from_upstream(error, model=model.familiar) from None
        tag = model.qualified if model.qualified in reply.tags else (reply.tags[0] if reply.tags else reply.id)
        return model_entry(reply, tag)

    @router.post("/chat/completions", summary="Chat completion (SSE when stream is true)")
    async def chat_completions(request: Request, body: ChatCompletionRequest):
        model = convert.resolve_model(body.model)
        stream, first, rest = await _generate(request, convert.chat_request(body, model), model)
        if body.stream:
            return sse_response(_streamed(_chat_events(first, rest, model, body), stream, model))
        collected = await cancel_on_disconnect(request, _collect(first, rest, stream))
        collected.tool_calls = convert.allowed_calls(collected.tool_calls, body)
        return convert.chat_completion(collected, _served(collected.model, model), body.logprobs)

    @router.post("/completions", summary="Text completion (SSE when stream is true)")
    async def completions(request: Request, body: CompletionRequest):
        model = convert.resolve_model(body.model)
        stream, first, rest = await _generate(request, convert.completion_request(body, model), model)
        if body.stream:
            return sse_response(_streamed(_completion_events(first, rest, model, body), stream, model))
        collected = await cancel_on_disconnect(request, _collect(first, rest, stream))
        return convert.text_completion(collected, _served(collected.model, model), body.logprobs is not None,
                                       convert.echoed(body))

    @router.post("/embeddings", summary="Embeddings (float or base64)")
    async def create_embeddings(request: Request, body: EmbeddingRequest) -> dict:
        model = convert.resolve_model(body.model)
        try:
            reply = await cancel_on_disconnect(
                request,
                _backends(request).runner.unary(
                    "Embed", convert.embed_request(body, model), _options(request).long_timeout
                ),
            )
        except UpstreamError as error:
            raise convert.blame(from_upstream(error, model=model.familiar), "input") from None
        return convert.embeddings(reply, _served(reply.model, model), body.encoding_format, body.dimensions)

    return router
