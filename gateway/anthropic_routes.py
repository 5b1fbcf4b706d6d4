"""The Anthropic Messages API: `POST /v1/messages` (JSON, or its SSE event stream) and
`POST /v1/messages/count_tokens`, also under `/anthropic` for clients given that base URL.

Every error these routes answer is Anthropic's `{"type": "error", "error": {"type", "message"}}`: the
route class below reshapes what the gateway's handlers would answer in OpenAI's shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from modelrunner.gateway import anthropic_convert as convert
from modelrunner.gateway.anthropic_models import CountTokensRequest, MessagesRequest
from modelrunner.gateway.backends import ServerStream, UpstreamError
from modelrunner.gateway.errors import APIError, anthropic_body, anthropic_response, from_upstream, validation_error
from modelrunner.gateway.openai_convert import Collected, ModelName, resolve_model
from modelrunner.gateway.openai_routes import _chain, _collect, _generate, _served
from modelrunner.gateway.streaming import cancel_on_disconnect, sse_event, sse_response
from modelrunner.v1 import runner_pb2

PREFIXES = ("", "/anthropic")


class AnthropicRoute(APIRoute):
    """Answers every failure of its endpoint (a body FastAPI rejects included) in Anthropic's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return anthropic_response(validation_error(exc))
            except APIError as exc:
                return anthropic_response(exc)
            except UpstreamError as exc:
                return anthropic_response(from_upstream(exc))
            except StarletteHTTPException as exc:
                return anthropic_response(APIError(exc.status_code, str(exc.detail)))

        return route

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A wrong method (405) is refused before the handler runs: in Anthropic's shape too."""
        try:
            await super().handle(scope, receive, send)
        except StarletteHTTPException as exc:
            error = APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
            await anthropic_response(error)(scope, receive, send)


def event(payload: dict) -> bytes:
    """One server-sent event, named by its type as Anthropic's stream names them."""
    return f"event: {payload['type']}\n".encode() + sse_event(payload)


def _block(index: int, block: dict, delta: dict | None) -> list[bytes]:
    """A whole content block: its start, one delta, its stop."""
    events = [event({"type": "content_block_start", "index": index, "content_block": block})]
    if delta is not None:
        events.append(event({"type": "content_block_delta", "index": index, "delta": delta}))
    events.append(event({"type": "content_block_stop", "index": index}))
    return events


async def _events(first, rest: AsyncIterator, model: ModelName) -> AsyncIterator[bytes]:
    served = _served(first.model if first else "", model)
    # The Runner's first chunk counts the prompt; the output's count comes on message_delta.
    prompt = first.usage if first is not None else runner_pb2.Usage()
    opening = Collected(usage=runner_pb2.Usage(prompt_tokens=prompt.prompt_tokens,
                                               cached_prompt_tokens=prompt.cached_prompt_tokens))
    start = {**convert.message(opening, served), "content": [], "stop_reason": None}
    yield event({"type": "message_start", "message": start})
    yield event({"type": "ping"})
    final = runner_pb2.GenerateChunk()
    text_open = False
    async for item in _chain(first, rest):
        if item.text:
            if not text_open:
                yield event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                text_open = True
            yield event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": item.text}})
        if item.finish_reason:
            final = item
    index = 0
    if text_open:
        yield event({"type": "content_block_stop", "index": 0})
        index = 1
    elif not final.tool_calls:
        for chunk in _block(0, {"type": "text", "text": ""}, None):  # content is never empty
            yield chunk
        index = 1
    for call in final.tool_calls:
        block = convert.tool_use_block(call)
        arguments = json.dumps(block["input"], ensure_ascii=False, separators=(",", ":"))  # as the whole answer has it
        for chunk in _block(index, {**block, "input": {}}, {"type": "input_json_delta", "partial_json": arguments}):
            yield chunk
        index += 1
    yield event({
        "type": "message_delta",
        "delta": {"stop_reason": convert.stop_reason(final), "stop_sequence": final.stop_sequence or None},
        "usage": convert.usage(final.usage),
    })
    yield event({"type": "message_stop"})


async def _streamed(events: AsyncIterator[bytes], stream: ServerStream, model: ModelName) -> AsyncIterator[bytes]:
    """The event stream; an upstream error after it began ends it with an `error` event."""
    try:
        async with aclosing(events):
            async for chunk in events:
                yield chunk
    except UpstreamError as error:
        yield event(anthropic_body(from_upstream(error, model=model.familiar)))
    finally:
        stream.cancel()


def build_router() -> APIRouter:
    router = APIRouter(tags=["Anthropic"], route_class=AnthropicRoute)

    @router.post("/v1/messages", summary="Anthropic Messages (an SSE event stream when stream is true)")
    async def create_message(request: Request, body: MessagesRequest):
        model = resolve_model(body.model)
        try:
            stream, first, rest = await _generate(request, convert.generate_request(body, model), model)
        except APIError as error:
            raise convert.blame_format(error) from None
        if body.stream:
            return sse_response(_streamed(_events(first, rest, model), stream, model))
        collected = await cancel_on_disconnect(request, _collect(first, rest, stream))
        return convert.message(collected, _served(collected.model, model))

    @router.post("/v1/messages/count_tokens", summary="Count a Messages request's input tokens")
    async def count_tokens(request: Request, body: CountTokensRequest) -> dict:
        model = resolve_model(body.model)
        chat, _ = convert.chat(body)
        backends = request.app.state.backends
        try:
            reply = await cancel_on_disconnect(request, backends.runner.unary(
                "Tokenize", runner_pb2.TokenizeRequest(model=model.qualified, chat=chat),
                request.app.state.options.long_timeout,
            ))
        except UpstreamError as error:
            raise from_upstream(error, model=model.familiar) from None
        return {"input_tokens": reply.count}

    return router


def install(app: FastAPI) -> None:
    router = build_router()
    for prefix in PREFIXES:
        app.include_router(router, prefix=prefix)
