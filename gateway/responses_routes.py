"""The OpenAI Responses API: `POST /v1/responses` (JSON, or its SSE event stream), and the stored
responses: `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`. Also under
`/responses`, `/engines/v1` and `/engines/llama.cpp/v1`. Errors are OpenAI's (gateway/errors.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request

from modelrunner.gateway import responses_convert as convert
from modelrunner.gateway.backends import ServerStream, UpstreamError
from modelrunner.gateway.errors import APIError, from_upstream
from modelrunner.gateway.openai_convert import Collected, ModelName, new_id, resolve_model
from modelrunner.gateway.openai_routes import PREFIXES as OPENAI_PREFIXES
from modelrunner.gateway.openai_routes import _chain, _collect, _generate, _served
from modelrunner.gateway.responses_models import InputItemsQuery, ResponsesRequest
from modelrunner.gateway.responses_store import ResponseStore, Stored
from modelrunner.gateway.streaming import cancel_on_disconnect, sse_event, sse_response

PREFIXES = ("", *OPENAI_PREFIXES)


def _store(request: Request) -> ResponseStore:
    return request.app.state.responses


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id {response_id!r} not found.", param="response_id", code="not_found")


def _refuse_unsupported(body: ResponsesRequest) -> None:
    """A field whose meaning the server cannot honour is refused, not ignored: ignoring `conversation`
    would answer without the conversation, ignoring `prompt` without the prompt's instructions."""
    if body.background:
        raise APIError(400, "background: background responses are not supported; leave it false",
                       param="background", code="invalid_value")
    if body.conversation is not None:
        raise APIError(400, "conversation: conversations are not supported; chain the turns with "
                            "previous_response_id instead", param="conversation", code="invalid_value")
    if body.prompt is not None:
        raise APIError(400, "prompt: stored prompt templates are not supported; give the instructions and input "
                            "themselves", param="prompt", code="invalid_value")


class _Turn:
    """One request being answered: what its Response object and its stored entry are made of."""

    def __init__(self, body: ResponsesRequest, model: ModelName, conversation: list[dict], items: list[dict]) -> None:
        self.body = body
        self.model = model
        self.conversation = conversation
        self.items = items
        self.id = new_id("resp")
        self.message_id = new_id("msg")
        self.created_at = int(time.time())
        self.served = model.familiar

    def response(self, **fields) -> dict:
        return convert.response(self.body, self.id, self.created_at, self.served, **fields)

    def finish(self, collected: Collected, store: ResponseStore) -> dict:
        output = convert.output_items(collected, self.message_id)
        answer = self.response(output=output, finish_reason=collected.finish_reason,
                               usage_=convert.usage(collected.usage))
        if self.body.store:
            store.put(self.id, Stored(answer, self.items, [*self.conversation, *output], time.time()))
        return answer


class _Events:
    """Numbers the events of one stream."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\n".encode() + sse_event(payload)


async def _events(first, rest: AsyncIterator, turn: _Turn, store: ResponseStore, emit: _Events) -> AsyncIterator[bytes]:
    started = turn.response(status="in_progress", usage_=None)
    yield emit("response.created", response=started)
    yield emit("response.in_progress", response=started)
    collected = Collected()
    part = {"item_id": turn.message_id, "output_index": 0, "content_index": 0}

    def open_message() -> list[bytes]:
        item = convert.message_item(turn.message_id, "assistant", [], "in_progress")
        return [emit("response.output_item.added", output_index=0, item=item),
                emit("response.content_part.added", **part, part=convert.output_text_part(""))]

    async for item in _chain(first, rest):
        if item.text:
            if not collected.text:
                for event in open_message():
                    yield event
            yield emit("response.output_text.delta", **part, delta=item.text, logprobs=[])
        collected.add(item)
    answer = turn.finish(collected, store)
    for index, output in enumerate(answer["output"]):
        if output["type"] == "message":
            if not collected.text:
                for event in open_message():
                    yield event
            yield emit("response.output_text.done", **part, text=collected.text, logprobs=[])
            yield emit("response.content_part.done", **part, part=output["content"][0])
        else:
            yield emit("response.output_item.added", output_index=index, item={**output, "arguments": "",
                                                                                "status": "in_progress"})
            call = {"item_id": output["id"], "output_index": index}
            yield emit("response.function_call_arguments.delta", **call, delta=output["arguments"])
            yield emit("response.function_call_arguments.done", **call, arguments=output["arguments"],
                       name=output["name"])
        yield emit("response.output_item.done", output_index=index, item=output)
    kind = "response.incomplete" if answer["status"] == "incomplete" else "response.completed"
    yield emit(kind, response=answer)


async def _streamed(
    events: AsyncIterator[bytes], stream: ServerStream, turn: _Turn, emit: _Events
) -> AsyncIterator[bytes]:
    """The event stream; an upstream error after it began ends it with `response.failed`."""
    try:
        async with aclosing(events):
            async for event in events:
                yield event
    except UpstreamError as error:
        failure = from_upstream(error, model=turn.model.familiar)
        failed = turn.response(status="failed")
        failed["error"] = {"code": failure.code or "server_error", "message": failure.message}
        yield emit("response.failed", response=failed)
    finally:
        stream.cancel()


def build_router() -> APIRouter:
    router = APIRouter(tags=["OpenAI Responses"])

    @router.post("/responses", summary="Create a response (an SSE event stream when stream is true)")
    async def create_response(request: Request, body: ResponsesRequest):
        _refuse_unsupported(body)
        model = resolve_model(body.model)
        store = _store(request)
        earlier: list[dict] = []
        if body.previous_response_id:
            previous = store.get(body.previous_response_id)
            if previous is None:
                raise APIError(404, f"Previous response with id {body.previous_response_id!r} not found.",
                               param="previous_response_id", code="previous_response_not_found")
            earlier = previous.conversation
        items = convert.input_items(body)
        turn = _Turn(body, model, [*earlier, *items], items)
        try:
            stream, first, rest = await _generate(request, convert.generate_request(body, model, turn.conversation), model)
        except APIError as error:
            raise convert.blame_format(error) from None
        turn.served = _served(first.model if first else "", model)
        if body.stream:
            emit = _Events()
            return sse_response(_streamed(_events(first, rest, turn, store, emit), stream, turn, emit))
        collected = await cancel_on_disconnect(request, _collect(first, rest, stream))
        return turn.finish(collected, store)

    @router.get("/responses/{response_id}", summary="A stored response")
    async def get_response(request: Request, response_id: str) -> dict:
        stored = _store(request).get(response_id)
        if stored is None:
            raise _not_found(response_id)
        return stored.response

    @router.delete("/responses/{response_id}", summary="Delete a stored response")
    async def delete_response(request: Request, response_id: str) -> dict:
        if not _store(request).delete(response_id):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    @router.get("/responses/{response_id}/input_items", summary="The input items of a stored response")
    async def list_input_items(request: Request, response_id: str,
                               query: Annotated[InputItemsQuery, Query()]) -> dict:
        stored = _store(request).get(response_id)
        if stored is None:
            raise _not_found(response_id)
        items = stored.input_items if query.order == "asc" else stored.input_items[::-1]
        ids = [item["id"] for item in items]
        for cursor, name in ((query.after, "after"), (query.before, "before")):
            if cursor is not None and cursor not in ids:
                raise APIError(400, f"{name}: no input item {cursor!r} in response {response_id!r}", param=name,
                               code="invalid_value")
        start = ids.index(query.after) + 1 if query.after else 0
        end = ids.index(query.before) if query.before else len(items)
        page = items[start:end][: query.limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": start + len(page) < end}

    return router


def install(app: FastAPI, store: ResponseStore | None = None) -> None:
    """Mounts the routes, with `store` (by default the one the environment configures)."""
    app.state.responses = store or ResponseStore.from_settings()
    router = build_router()
    for prefix in PREFIXES:
        app.include_router(router, prefix=prefix)
