"""Streamed answers: Server-Sent Events for the OpenAI routes, JSON lines for pull/push progress.

A stream ends its gRPC call whatever way it stops: finished, failed, or the client went away (Starlette
cancels the body on `http.disconnect`; `aclose()` below covers the other exits), so a client that
disconnects frees the Runner's slot at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelrunner.gateway.backends import ServerStream
from modelrunner.gateway.errors import APIError

T = TypeVar("T")

SSE_DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def json_line(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body iterator (and so the gRPC call behind it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def sse_response(events: AsyncIterator[bytes]) -> ClosingStreamingResponse:
    return ClosingStreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def peek(stream: ServerStream) -> tuple[object | None, AsyncIterator]:
    """The first message of a stream and an iterator over the rest, so that an error before the first
    message (unknown model, queue full, service down) is answered with its HTTP status, not mid-stream."""
    iterator = aiter(stream)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        return None, iterator
    except BaseException:
        stream.cancel()
        raise
    return first, iterator


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Runs `work` (a non-streamed answer being built) and cancels it if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        # Nobody reads this answer; it only ends the request (nginx's "client closed request").
        raise APIError(499, "the client closed the request", code="client_closed_request")
    return task.result()
