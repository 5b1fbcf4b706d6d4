"""Ollama's REST API (`/api/*`) over the gRPC services, for the `ollama` client, Open WebUI and the
editors that speak it: chat and generate (NDJSON streams by default), embeddings, the model list,
show, ps, pull and push progress, copy, delete, create (with its blob uploads) and the CLI's `HEAD /`
heartbeat. Errors are Ollama's `{"error": "..."}`.

Timings: `load_duration` is the Runner's LoadModel call (near zero when the model is loaded) and
`total_duration` the whole request, both measured here; prompt evaluation and evaluation are the
engine's own (the Runner's Usage), as Ollama's runner reports them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import grpc
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelrunner.common.names import is_digest
from modelrunner.gateway import ollama_convert as convert
from modelrunner.gateway import ollama_create
from modelrunner.gateway.backends import Backends, ServerStream, Service, UpstreamError
from modelrunner.gateway.dmr_routes import upload_blob  # the Store's one blob upload path
from modelrunner.gateway.errors import ERROR_RESPONSES, APIError, from_upstream, ollama_response, validation_error
from modelrunner.gateway.middleware import JSON, accepts
from modelrunner.gateway.ollama_convert import ModelName, Timings
from modelrunner.gateway.ollama_models import (
    ChatRequest,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    OllamaErrorBody,
    ShowRequest,
    TransferRequest,
)
from modelrunner.gateway.settings import GatewayOptions
from modelrunner.gateway.streaming import ClosingStreamingResponse, cancel_on_disconnect, json_line, peek
from modelrunner.v1 import distribution_pb2, runner_pb2, store_pb2

log = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"
RESPONSES = {status: {"model": OllamaErrorBody, "description": spec["description"]}
             for status, spec in ERROR_RESPONSES.items()}


def _as_api_error(exc: Exception) -> APIError | None:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, UpstreamError):
        return from_upstream(exc)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            return APIError(400, "missing request body")
        return validation_error(exc)
    if isinstance(exc, StarletteHTTPException):
        return APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return None


class OllamaRoute(APIRoute):
    """A route whose every failure is answered in Ollama's error body, not the OpenAI one."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                error = _as_api_error(exc)
                if error is None:  # a bug: logged, answered in the same body, never a traceback
                    log.exception("unhandled error", extra={"fields": {"path": request.url.path}})
                    error = APIError(500, f"internal error: {type(exc).__name__}")
                return ollama_response(error)

        return route


def _backends(request: Request) -> Backends:
    return request.app.state.backends


def _options(request: Request) -> GatewayOptions:
    return request.app.state.options


def _upstream(error: UpstreamError, model: ModelName) -> APIError:
    """A failed call about `model`: NOT_FOUND is Ollama's "not found, try pulling it first"."""
    if error.code == grpc.StatusCode.NOT_FOUND:
        return convert.not_found(model.typed, pull_hint=True)
    return from_upstream(error)


async def _call(request: Request, service: Service, method: str, message, model: ModelName, *, long: bool = False,
                not_found: APIError | None = None):
    """A unary call, cancelled if the client goes away; NOT_FOUND is about `model`."""
    options = _options(request)
    try:
        return await cancel_on_disconnect(
            request, service.unary(method, message, options.long_timeout if long else options.request_timeout)
        )
    except UpstreamError as error:
        if not_found is not None and error.code == grpc.StatusCode.NOT_FOUND:
            raise not_found from None
        raise _upstream(error, model) from None


async def _load(request: Request, model: ModelName, keep_alive: str | None, timings: Timings,
                context_size: int = 0) -> None:
    """Loads the model now (a no-op when it is loaded), so that its load time is measured; with a
    context size (num_ctx), the engine of that context. A keep_alive of 0 is left to the request
    itself: it unloads the model after answering."""
    keep = keep_alive if keep_alive and keep_alive != "0" else ""
    message = runner_pb2.LoadModelRequest(model=model.qualified, keep_alive=keep, context_size=context_size)
    await _call(request, _backends(request).runner, "LoadModel", message, model, long=True)
    timings.loaded = timings.mark()


async def _lifecycle(request: Request, model: ModelName, keep_alive: str | None, context_size: int,
                     chat: bool) -> JSONResponse:
    """An empty chat or prompt: load the model (the engine of its num_ctx, if any), or with keep_alive 0
    unload it, every engine of it (Ollama's convention)."""
    backends = _backends(request)
    if keep_alive == "0":
        await _call(request, backends.store, "GetModel", store_pb2.GetModelRequest(name=model.qualified), model,
                    not_found=convert.not_found(model.typed))
        await _call(request, backends.runner, "UnloadModels",
                    runner_pb2.UnloadModelsRequest(models=[model.qualified]), model)
        return JSONResponse(convert.lifecycle_answer(model, chat, "unload"))
    await _load(request, model, keep_alive, Timings(), context_size)
    return JSONResponse(convert.lifecycle_answer(model, chat, "load"))


async def _chain(first, rest: AsyncIterator) -> AsyncIterator:
    if first is not None:
        yield first
    async for item in rest:
        yield item


async def _generate(request: Request, body: ChatRequest | GenerateRequest, model: ModelName,
                    grpc_request: runner_pb2.GenerateRequest, chat: bool) -> Response:
    timings = Timings()
    await _load(request, model, body.keep_alive, timings, grpc_request.context_size)
    stream = _backends(request).runner.stream("Generate", grpc_request)
    try:
        first, rest = await cancel_on_disconnect(request, peek(stream))
    except UpstreamError as error:
        raise _upstream(error, model) from None
    if body.stream:
        lines = _stream_lines(_chain(first, rest), stream, model, chat, timings)
        return ClosingStreamingResponse(lines, media_type=NDJSON)
    collected = await cancel_on_disconnect(request, _collect(_chain(first, rest), stream))
    if chat:
        line = convert.chat_line(model, collected.text, collected.tool_calls, collected.logprobs)
    else:
        line = convert.generate_line(model, collected.text, collected.logprobs)
    return JSONResponse(convert.finish(line, collected.finish_reason, collected.usage, timings))


async def _collect(chunks: AsyncIterator, stream: ServerStream) -> convert.Collected:
    collected = convert.Collected()
    try:
        async for chunk in chunks:
            collected.add(chunk)
    finally:
        stream.cancel()
    return collected


async def _stream_lines(chunks: AsyncIterator, stream: ServerStream, model: ModelName, chat: bool,
                        timings: Timings) -> AsyncIterator[bytes]:
    """NDJSON: a line per text delta, the tool calls (chat) in a line of their own, then the final line
    with done_reason and the timings. An error after the first line ends the stream with an error line."""
    line = convert.chat_line if chat else convert.generate_line
    final = runner_pb2.GenerateChunk()
    try:
        async for chunk in chunks:
            if chunk.text or chunk.logprobs:
                yield json_line(line(model, chunk.text, lps=chunk.logprobs))
            if chat and chunk.tool_calls:
                yield json_line(convert.chat_line(model, calls=chunk.tool_calls))
            if chunk.finish_reason:
                final = chunk
        yield json_line(convert.finish(line(model), final.finish_reason, final.usage, timings))
    except UpstreamError as error:
        yield json_line({"error": _upstream(error, model).message})
    finally:
        stream.cancel()


async def _transfer(request: Request, body: TransferRequest, mode: str) -> Response:
    """Pull or push: Ollama's status lines (streamed by default), or one `{"status": "success"}`."""
    model = convert.resolve(body.model)
    distribution = _backends(request).distribution
    if mode == "pull":
        stream = distribution.stream("PullModel", distribution_pb2.PullModelRequest(
            reference=model.qualified, insecure=body.insecure))
    else:
        stream = distribution.stream("PushModel", distribution_pb2.PushModelRequest(
            name=model.qualified, insecure=body.insecure))
    try:
        first, rest = await cancel_on_disconnect(request, peek(stream))
    except UpstreamError as error:
        raise from_upstream(error) from None
    progress = convert.ProgressLines(mode)
    if body.stream:
        return ClosingStreamingResponse(_progress_lines(progress, _chain(first, rest), stream), media_type=NDJSON)

    async def drain() -> None:
        try:
            async for _ in rest:
                pass
        finally:
            stream.cancel()

    try:
        await cancel_on_disconnect(request, drain())
    except UpstreamError as error:
        raise from_upstream(error) from None
    return JSONResponse({"status": "success"})


async def _progress_lines(progress: convert.ProgressLines, messages: AsyncIterator,
                          stream: ServerStream) -> AsyncIterator[bytes]:
    try:
        yield json_line(progress.opening())
        async for message in messages:
            for line in progress.lines(message):
                yield json_line(line)
    except UpstreamError as error:
        yield json_line({"error": from_upstream(error).message})
    finally:
        stream.cancel()


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Ollama"], route_class=OllamaRoute, responses=RESPONSES)

    @router.get("/version", summary="The Ollama API version served")
    async def version() -> dict:
        return {"version": convert.OLLAMA_API_VERSION}

    @router.head("/version", include_in_schema=False)  # clients probe for a server with HEAD
    async def version_probe() -> Response:
        return Response(status_code=200, media_type="application/json")

    @router.get("/tags", summary="Local models (one entry per tag)")
    async def tags(request: Request) -> dict:
        reply = await _backends(request).store.unary(
            "ListModels", store_pb2.ListModelsRequest(), _options(request).request_timeout)
        return {"models": convert.tag_entries(reply.models)}

    @router.post("/show", summary="A model's details, metadata and capabilities")
    async def show(request: Request, body: ShowRequest) -> dict:
        model = convert.resolve(body.model)
        reply = await _call(request, _backends(request).store, "GetModel",
                            store_pb2.GetModelRequest(name=model.qualified), model,
                            not_found=convert.not_found(model.typed))
        return convert.show(reply, convert.display_name(model.qualified))

    @router.get("/ps", summary="Loaded models")
    async def ps(request: Request) -> dict:
        backends, timeout = _backends(request), _options(request).request_timeout
        running = await backends.runner.unary("ListRunning", runner_pb2.ListRunningRequest(), timeout)
        configs = {}
        if running.runners:
            models = await backends.store.unary("ListModels", store_pb2.ListModelsRequest(), timeout)
            configs = {m.id: m.config for m in models.models}
        entries = [convert.ps_entry(r, configs.get(r.model_id)) for r in running.runners]
        return {"models": sorted(entries, key=lambda e: e["expires_at"], reverse=True)}

    @router.post("/chat", summary="Chat (NDJSON stream unless stream is false)",
                 response_model=None, responses={200: {"content": {NDJSON: {}}}})
    async def chat(request: Request, body: ChatRequest) -> Response:
        model = convert.resolve(body.model)
        grpc_request = convert.chat_request(body, model)  # validates before anything loads
        if not body.messages:
            return await _lifecycle(request, model, body.keep_alive, grpc_request.context_size, chat=True)
        return await _generate(request, body, model, grpc_request, chat=True)

    @router.post("/generate", summary="Generate from a prompt (NDJSON stream unless stream is false)",
                 response_model=None, responses={200: {"content": {NDJSON: {}}}})
    async def generate(request: Request, body: GenerateRequest) -> Response:
        model = convert.resolve(body.model)
        grpc_request = convert.generate_request(body, model)
        if not body.prompt:
            return await _lifecycle(request, model, body.keep_alive, grpc_request.context_size, chat=False)
        return await _generate(request, body, model, grpc_request, chat=False)

    @router.post("/embed", summary="Embeddings of one or more inputs")
    async def embed(request: Request, body: EmbedRequest) -> dict:
        model = convert.resolve(body.model)
        timings = Timings()
        await _load(request, model, body.keep_alive, timings)
        reply = await _call(request, _backends(request).runner, "Embed", runner_pb2.EmbedRequest(
            model=model.qualified, inputs=body.input, keep_alive=body.keep_alive or "", truncate=body.truncate),
            model, long=True)
        return {
            "model": model.typed,
            "embeddings": [convert.embedding(e.values, body.dimensions) for e in reply.embeddings],
            "total_duration": timings.mark() - timings.start,
            "load_duration": timings.loaded - timings.start,
            "prompt_eval_count": reply.prompt_tokens,
        }

    @router.post("/embeddings", summary="The embedding of one prompt (older API)")
    async def embeddings(request: Request, body: EmbeddingsRequest) -> dict:
        model = convert.resolve(body.model)
        await _load(request, model, body.keep_alive, Timings())
        if not body.prompt:
            return {"embedding": []}
        reply = await _call(request, _backends(request).runner, "Embed", runner_pb2.EmbedRequest(
            model=model.qualified, inputs=[body.prompt], keep_alive=body.keep_alive or ""), model, long=True)
        return {"embedding": list(reply.embeddings[0].values)}

    @router.post("/pull", summary="Pull a model from its registry (status lines unless stream is false)",
                 response_model=None, responses={200: {"content": {NDJSON: {}}}})
    async def pull(request: Request, body: TransferRequest) -> Response:
        return await _transfer(request, body, "pull")

    @router.post("/push", summary="Push a model to its registry (status lines unless stream is false)",
                 response_model=None, responses={200: {"content": {NDJSON: {}}}})
    async def push(request: Request, body: TransferRequest) -> Response:
        return await _transfer(request, body, "push")

    @router.delete("/delete", summary="Delete a model's tag (the model goes with its last tag)")
    async def delete(request: Request, body: DeleteRequest) -> Response:
        model = convert.resolve(body.model)
        await _call(request, _backends(request).store, "DeleteModel",
                    store_pb2.DeleteModelRequest(name=model.qualified), model, not_found=convert.not_found(model.typed))
        return Response(status_code=200)

    @router.post("/copy", summary="Copy a model to another name (a new tag)")
    async def copy(request: Request, body: CopyRequest) -> Response:
        source = convert.resolve(body.source, "source")
        destination = convert.destination(body.destination)
        await _call(request, _backends(request).store, "TagModel",
                    store_pb2.TagModelRequest(source=source.qualified, repo=destination.name, tag=destination.tag),
                    source, not_found=APIError(404, f'model "{source.typed}" not found'))
        return Response(status_code=200)

    @router.post("/create", summary="Name a local model anew (`from`), or package uploaded GGUF blobs (`files`)",
                 response_model=None, responses={200: {"content": {NDJSON: {}}}})
    async def create(request: Request, body: CreateRequest) -> Response:
        ollama_create.check(body)
        target = convert.resolve(body.model)
        new_name = convert.destination(body.model, "model")
        store = _backends(request).store
        if body.from_:
            source = convert.resolve(body.from_, "from")
            await _call(request, store, "TagModel", store_pb2.TagModelRequest(
                source=source.qualified, repo=new_name.name, tag=new_name.tag), source,
                not_found=convert.not_found(source.typed, pull_hint=True))
        else:
            files = body.files or {}
            await _call(request, store, "PackageModel", store_pb2.PackageModelRequest(
                name=target.qualified, gguf=ollama_create.package_files(files)), target, long=True,
                not_found=ollama_create.missing_blob(files))
        lines = ollama_create.status_lines("from" if body.from_ else "files")
        if not body.stream:
            return JSONResponse(lines[-1])
        return Response(b"".join(json_line(line) for line in lines), media_type=NDJSON)

    @router.head("/blobs/{digest}", summary="Whether the Store holds a blob (200) or not (404)")
    async def blob_exists(request: Request, digest: str) -> Response:
        digest = _blob_digest(digest)
        reply = await _call(request, _backends(request).store, "StatBlob", store_pb2.StatBlobRequest(digest=digest),
                            ModelName(digest, digest))
        return Response(status_code=200 if reply.exists else 404)

    return router


async def _blob_upload(request: Request, digest: str) -> Response:
    """The bytes of a blob (a GGUF for /api/create), streamed to the Store and verified there."""
    reply = await upload_blob(request, _blob_digest(digest))
    return Response(status_code=reply.status_code)  # Ollama's: 201, no body (200: already held)


def _blob_digest(digest: str) -> str:
    """Ollama's blob names: `sha256:<hex>`, or `sha256-<hex>` as its blob files are named."""
    digest = digest.replace("sha256-", "sha256:", 1) if digest.startswith("sha256-") else digest
    if not is_digest(digest):
        raise APIError(400, f"digest {digest[:80]!r} must be sha256:<64 hex digits> of the blob's bytes",
                       param="digest")
    return digest


async def _server_probe() -> Response:
    """`HEAD /`: Ollama's CLI asks this before every command (its heartbeat)."""
    return Response(status_code=200, media_type="text/plain")


def install(app: FastAPI) -> None:
    app.include_router(build_router())
    # On the app itself, not the router: ContentTypeMiddleware reads a route's declared body types from
    # the app's own routes, and an included router's routes are not among them (FastAPI 0.165).
    app.router.add_api_route(
        "/api/blobs/{digest}", _blob_upload, methods=["POST"], tags=["Ollama"], route_class_override=OllamaRoute,
        summary="Upload a blob (a GGUF for /api/create), verified against its digest", responses=RESPONSES,
        openapi_extra=accepts(JSON, "application/octet-stream"),
        include_in_schema=False)  # raw bytes: outside the JSON-body fuzz of tests/support/fuzz.py, which lists POSTs
    app.add_api_route("/", _server_probe, methods=["HEAD"], include_in_schema=False)
