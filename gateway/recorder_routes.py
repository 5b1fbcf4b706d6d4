"""The recorder's routes: `GET /engines/requests` (the kept records, oldest first; `?model=` filters) and
their live stream, `GET /engines/requests/stream` or `?stream=true`: an SSE event per finished request
(`include_existing=true` sends the kept ones first), after a keep-alive comment that says the stream is
live (what finishes from then on will come), and another one whenever nothing happens for a while."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import FastAPI, Query

from modelrunner.gateway.recorder import Recorder, RecorderMiddleware
from modelrunner.gateway.settings import GatewayOptions
from modelrunner.gateway.streaming import ClosingStreamingResponse, sse_event, sse_response

KEEPALIVE_S = 15.0
KEEPALIVE = b": keep-alive\n\n"

ModelQuery = Annotated[str | None, Query(max_length=1024, description="only this model's requests")]
ExistingQuery = Annotated[bool, Query(description="stream: send the kept records first")]


async def _events(recorder: Recorder, model: str | None, include_existing: bool) -> AsyncIterator[bytes]:
    followed = recorder.follow(model, existing=include_existing, idle_s=KEEPALIVE_S)
    try:
        async for record in followed:
            yield KEEPALIVE if record is None else sse_event(recorder.to_json(record))
    finally:
        await followed.aclose()


def _stream(recorder: Recorder, model: str | None, include_existing: bool) -> ClosingStreamingResponse:
    return sse_response(_events(recorder, model, include_existing))


def install(app: FastAPI, options: GatewayOptions) -> None:
    """Creates the app's recorder, its routes and (unless off) its middleware. Call it before adding
    the other middleware: added first, it runs last, so it sees only requests the edge let through."""
    recorder = Recorder(options.recorded_requests, options.recorded_body_bytes, secrets=(options.api_key,))
    app.state.recorder = recorder
    if options.recorded_requests > 0:
        app.add_middleware(RecorderMiddleware, recorder=recorder)

    @app.get("/engines/requests", tags=["Requests"], summary="The last requests of each model (or a live stream)",
             responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}})
    async def list_requests(
        model: ModelQuery = None,
        stream: Annotated[bool, Query(description="a live SSE stream instead")] = False,
        include_existing: ExistingQuery = False,
    ):
        if stream:
            return _stream(recorder, model, include_existing)
        return {"requests": [recorder.to_json(r) for r in recorder.records(model)]}

    @app.get("/engines/requests/stream", tags=["Requests"], summary="Each request as it finishes (SSE)",
             response_class=ClosingStreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def stream_requests(model: ModelQuery = None, include_existing: ExistingQuery = False):
        return _stream(recorder, model, include_existing)
