"""Docker Model Runner's /models and /engines routes: the transcoded route table, plus DMR's shaping on
top (201 for tag, 202 for _configure, JSON lines for pull/push progress, `?remote=true` to the
Distribution, DELETE's one-key actions) and the routes the protos do not annotate: the list of
configurations, and the blob upload that packaging streams its files through (the Store opens no path a
client names).

A registry that cannot be reached answers 502, not the 503 its UNAVAILABLE maps to elsewhere: the
`docker model` CLI reads any 503 as "Docker Model Runner is not running", which would send its user
to restart a runner that is fine. A Distribution service that is itself down still answers 503."""

from __future__ import annotations

import asyncio
import json

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic_core import PydanticCustomError
from starlette.requests import ClientDisconnect

from modelrunner.common.names import is_digest
from modelrunner.gateway import proto_json
from modelrunner.gateway.backends import Backends, Service, UpstreamError
from modelrunner.gateway.errors import APIError, from_upstream
from modelrunner.gateway.middleware import accepts
from modelrunner.gateway.openai_models import check_json
from modelrunner.gateway.settings import GatewayOptions
from modelrunner.gateway.streaming import ClosingStreamingResponse, cancel_on_disconnect, json_line, peek
from modelrunner.gateway.transcoding import HttpRoute, build_request, openapi_operation, routes_of
from modelrunner.v1 import distribution_pb2, runner_pb2, store_pb2

SERVICES = [
    store_pb2.DESCRIPTOR.services_by_name["Store"],
    distribution_pb2.DESCRIPTOR.services_by_name["Distribution"],
    runner_pb2.DESCRIPTOR.services_by_name["Runner"],
]
STATUS = {"modelrunner.v1.Store.TagModel": 201, "modelrunner.v1.Runner.Configure": 202}
LONG_RUNNING = {"modelrunner.v1.Store.PackageModel", "modelrunner.v1.Store.PurgeModels", "modelrunner.v1.Store.Prune"}
GET_MODEL = "modelrunner.v1.Store.GetModel"
PACKAGE_MODEL = "modelrunner.v1.Store.PackageModel"
BLOB_UPLOAD = "/models/blobs/{digest}"  # PUT, raw bytes (application/octet-stream), streamed to the Store
SERVER_PATH_FIELDS = ("gguf_path", "license_path", "chat_template_path")  # what PackageModel once took
DELETE_MODEL = "modelrunner.v1.Store.DeleteModel"
TAG_MODEL = "modelrunner.v1.Store.TagModel"
PULL_MODEL = "modelrunner.v1.Distribution.PullModel"
CONFIGURE = "modelrunner.v1.Runner.Configure"
BACKEND_CONFIGURE = "/engines/llama.cpp/_configure"  # DMR's per-backend form of /engines/_configure


def _upstream(error: UpstreamError) -> APIError:
    """from_upstream, but a registry the Distribution could not reach is a 502 (see the module's note)."""
    answer = from_upstream(error)
    if error.service == "distribution" and error.code == grpc.StatusCode.UNAVAILABLE and not error.unreachable:
        answer.status = 502
    return answer


def _check_required(full_name: str, query, body) -> None:
    """The fields a route cannot go without, named as the client sends them (the protos would only say
    "model name is empty")."""
    if full_name == TAG_MODEL and not query.get("repo", "").strip():
        raise APIError(400, "repo: the query parameter is required: the repository of the new name, as in "
                       "POST /models/{name}/tag?repo=ai/mymodel&tag=v1 (tag defaults to latest)",
                       param="repo", code="invalid_value")
    if full_name == PULL_MODEL and not (isinstance(body, dict) and isinstance(body.get("from"), str)
                                        and body["from"].strip()):
        if isinstance(body, dict) and "from" in body and not isinstance(body["from"], str):
            return  # the wrong type: build_request names it
        raise APIError(400, 'from: is required: the model to pull, as in {"from": "ai/smollm2"}',
                       param="from", code="invalid_value")


def _service(backends: Backends, full_name: str) -> Service:
    return {
        "modelrunner.v1.Store": backends.store,
        "modelrunner.v1.Distribution": backends.distribution,
        "modelrunner.v1.Runner": backends.runner,
    }[full_name]


async def _json_body(request: Request):
    """The body as JSON, checked by check_json as every API family's bodies are: all that json.loads
    or the protos cannot take (bytes that are not UTF-8, an integer past Python's digit limit, NaN, a
    lone surrogate, deep nesting) is a 400, never an error while building the request."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return check_json(json.loads(raw, parse_int=_integer))
    except PydanticCustomError as exc:  # a ValueError too: first
        param = (exc.context or {}).get("param") or None
        raise APIError(400, exc.message(), param=param, code="invalid_value") from None
    except UnicodeDecodeError as exc:
        raise APIError(400, f"malformed JSON body: not UTF-8 text ({exc.reason} at byte {exc.start})",
                       code="invalid_json") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise APIError(400, f"malformed JSON body: {exc}", code="invalid_json") from None


def _integer(text: str) -> int:
    """json.loads' parse_int, whose refusal of a number past Python's digit limit (4300) says what to fix."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"an integer of {len(text)} digits is too long for any field") from None


def _answer(route: HttpRoute, reply) -> object:
    if route.response_body:
        data = proto_json.field_json(reply, route.response_body)
    else:
        data = proto_json.to_json(reply)
    if route.method.full_name == DELETE_MODEL:  # DMR: [{"Untagged": ...}, {"Deleted": ...}]
        data = [{k: v for k, v in action.items() if v} for action in data]
    return data


async def _progress(request: Request, service: Service, route: HttpRoute, message) -> Response:
    """Pull/push progress as JSON lines; an error before the first line keeps its HTTP status. A client
    that goes away before that line (a registry slow to answer) cancels the transfer, as after it."""
    stream = service.stream(route.method.name, message)
    try:
        first, rest = await cancel_on_disconnect(request, peek(stream))
    except UpstreamError as error:
        raise _upstream(error) from None

    async def lines():
        try:
            if first is not None:
                yield json_line(proto_json.to_json(first))
            async for progress in rest:
                yield json_line(proto_json.to_json(progress))
        except UpstreamError as error:
            yield json_line({"type": "error", "message": _upstream(error).message})
        finally:
            stream.cancel()

    accept = request.headers.get("accept", "")
    return ClosingStreamingResponse(lines(), media_type="application/json" if "application/json" in accept else "text/plain")


def _refuse_server_paths(body) -> None:
    """A file path in a packaging request is refused by name: the Store opens no path a client chose."""
    named = [field for field in SERVER_PATH_FIELDS if isinstance(body, dict) and field in body]
    if named:
        raise APIError(
            400,
            f"{named[0]}: the Store opens no file path a client names; upload the file with "
            f"`PUT {BLOB_UPLOAD}` and name its blob in `gguf` (or `license`, `chat_template`) as "
            '{"digest": "sha256:...", "name": "model.gguf"} (`modelrunner package` does both)',
            param=named[0],
            code="invalid_value",
        )


async def upload_blob(request: Request, digest: str) -> JSONResponse:
    """Streams the body into the Store as the blob `digest` (verified there against digest and size)."""
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise APIError(411, "the upload needs a Content-Length header: the Store checks the size it was told",
                       code="length_required")
    if not is_digest(digest):
        raise APIError(400, f"digest {digest!r} must be sha256:<64 hex digits> of the uploaded bytes", param="digest")
    header = store_pb2.WriteBlobRequest(header=store_pb2.BlobHeader(digest=digest, size=int(length), offset=0))
    gone: list[ClientDisconnect] = []

    async def messages():
        yield header
        try:
            async for data in request.stream():
                if data:
                    yield store_pb2.WriteBlobRequest(data=data)
        except ClientDisconnect as exc:  # grpc cancels the call; the Store keeps what arrived
            gone.append(exc)
            raise

    store: Service = request.app.state.backends.store
    try:
        reply = await store.stub.WriteBlob(messages(), timeout=request.app.state.options.long_timeout)
    except asyncio.CancelledError:
        # grpc cancelled the call because the client went away (not this request's own cancellation):
        # answer 499 rather than leave an unhandled error and its traceback in the log.
        if not gone or asyncio.current_task().cancelling():
            raise
        raise APIError(499, "the client closed the request", code="client_closed_request") from None
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.DATA_LOSS:  # the bytes sent are not the digest named: the client's
            raise APIError(400, error.details() or "the bytes do not match the digest", param="digest") from None
        raise from_upstream(store._error(error)) from None  # noqa: SLF001 (the Service maps its own errors)
    return JSONResponse(proto_json.to_json(reply), status_code=200 if reply.existed else 201)


def _endpoint(route: HttpRoute):
    full_name = route.method.full_name

    async def endpoint(request: Request) -> Response:
        backends: Backends = request.app.state.backends
        options: GatewayOptions = request.app.state.options
        body = await _json_body(request) if route.body else None
        if full_name == PACKAGE_MODEL:
            _refuse_server_paths(body)
        _check_required(full_name, request.query_params, body)
        message = build_request(route, request.path_params, list(request.query_params.multi_items()), body)
        service = _service(backends, route.service)
        if route.server_streaming:
            return await _progress(request, service, route, message)
        timeout = options.long_timeout if full_name in LONG_RUNNING else options.request_timeout
        if full_name == GET_MODEL and message.remote:
            service, method = backends.distribution, "GetRemoteModel"
            message = distribution_pb2.GetRemoteModelRequest(reference=message.name)
        else:
            method = route.method.name
        try:
            reply = await service.unary(method, message, timeout)
        except UpstreamError as error:
            raise _upstream(error) from None
        data = _answer(route, reply)
        if full_name == TAG_MODEL and isinstance(data, dict):  # DMR's answer, beside ours
            target = f"{request.query_params['repo']}:{request.query_params.get('tag') or 'latest'}"
            data = {"message": f"Model tagged successfully with {json.dumps(target)}", "target": target, **data}
        return JSONResponse(data, status_code=STATUS.get(full_name, 200))

    endpoint.__name__ = route.method.name
    return endpoint


def install(app: FastAPI) -> None:
    @app.get("/engines/_configure", tags=["Docker Model Runner"], summary="Every persisted per-model setting")
    async def list_configurations(request: Request) -> list[dict]:
        backends: Backends = request.app.state.backends
        reply = await backends.runner.unary(
            "ListConfigurations", runner_pb2.ListConfigurationsRequest(), request.app.state.options.request_timeout
        )
        return proto_json.field_json(reply, "settings")

    app.add_api_route(
        BLOB_UPLOAD,
        upload_blob,
        methods=["PUT"],
        tags=["Docker Model Runner"],
        summary="Upload a file to package (the raw bytes; answers 201, or 200 when the Store had it)",
        status_code=201,
        openapi_extra=accepts("application/octet-stream"),
    )
    for route in routes_of(SERVICES):
        if route.method.full_name == CONFIGURE:
            _install_backend_configure(app, route)
        status = STATUS.get(route.method.full_name, 200)
        operation = openapi_operation(route)
        if status != 200:
            operation["responses"] = {str(status): operation["responses"]["200"]}
        app.add_api_route(
            route.path,
            _endpoint(route),
            methods=[route.http_method],
            tags=["Docker Model Runner"],
            summary=f"{route.method.containing_service.name}.{route.method.name}",
            status_code=status,
            openapi_extra=operation,
            operation_id=f"{route.method.containing_service.name}_{route.method.name}",
        )


def _install_backend_configure(app: FastAPI, route: HttpRoute) -> None:
    """`POST /engines/llama.cpp/_configure`: DMR's per-backend form of `/engines/_configure`, as the
    OpenAI routes are served under `/engines/llama.cpp/v1/` too (llama.cpp is the Runner's backend)."""
    app.add_api_route(
        BACKEND_CONFIGURE,
        _endpoint(route),
        methods=["POST"],
        tags=["Docker Model Runner"],
        summary="Runner.Configure, under the backend's name (DMR's form); answers 202",
        status_code=202,
        openapi_extra=openapi_operation(route),
        operation_id="Runner_ConfigureLlamaCpp",
    )
