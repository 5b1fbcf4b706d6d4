"""Every error the gateway answers, in the OpenAI error body `{"error": {message, type, param, code}}`,
or in the shape of the surface its path belongs to: Ollama's `{"error": "..."}` under /api/, Anthropic's
`{"type": "error", "error": {type, message}}` on the Messages routes (`response_for`).

gRPC statuses map to HTTP statuses as DESIGN.md says (modelrunner.common.errors.http_status), except a
full disk (RESOURCE_EXHAUSTED with reason disk_full): 507, with no Retry-After, as no retry soon helps; a
request FastAPI rejects is a 400 naming the field (not FastAPI's 422); anything unexpected is a 500
with a short message, never a traceback.
"""

from __future__ import annotations

import logging
import re

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelrunner.common.errors import DISK_FULL, http_status
from modelrunner.gateway.backends import UpstreamError

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_S = "1"
_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


# Anthropic's error type for each HTTP status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OLLAMA_PREFIX = "/api/"  # Ollama's routes, whose clients read a plain-string error
ANTHROPIC_SUFFIXES = ("/v1/messages", "/v1/messages/count_tokens")  # the Messages routes, under any prefix


def error_type(status: int) -> str:
    """The OpenAI type for a status: the listed one, else by class, so that no 4xx (411, 415, 422...)
    reads as the server's fault."""
    return _TYPE_FOR_STATUS.get(status) or ("invalid_request_error" if 400 <= status < 500 else "server_error")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """The OpenAI error body every route answers errors with."""

    error: ErrorDetail


# Documented on every route in /openapi.json.
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "invalid request (the message and `param` name the field)",
        401: "missing or wrong API key",
        403: "permission denied",
        404: "unknown model or route",
        409: "conflict (e.g. a model with several tags deleted without force)",
        413: "request body too large",
        429: "busy: retry after the Retry-After header's seconds",
        499: "the client closed the request",
        500: "internal error",
        501: "not implemented by the service",
        502: "a service lost data",
        503: "a service is down or unavailable (the message names it)",
        504: "a service did not answer in time",
        507: "the models volume is full (the message says how much the write needed)",
    }.items()
}


class APIError(Exception):
    """An error answered as is: HTTP status, message, and the OpenAI type/param/code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_upstream(error: UpstreamError, *, model: str | None = None) -> APIError:
    """The HTTP answer for a failed gRPC call; `model` adds how to pull it to a NOT_FOUND."""
    status, kind = http_status(error.code, error.reason)
    message = error.details or error.code.name
    headers: dict[str, str] = {}
    code = error.code.name.lower()
    if error.unreachable:
        message = (f"the {error.service} service at {error.address} is unavailable ({message}): it is not running "
                   "or went away during the call; retry once it is back")
    elif error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"the {error.service} service did not answer in time ({message})"
    elif error.reason == DISK_FULL:  # 507: retrying in a second, as a 429 says, cannot help
        code = "insufficient_storage"
    elif error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        headers["Retry-After"] = error.retry_after or DEFAULT_RETRY_AFTER_S
    if model is not None and error.code == grpc.StatusCode.NOT_FOUND:
        code = "model_not_found"
        if "pull" not in message:
            message = f"{message}; pull it with `modelrunner pull {model}`"
    return APIError(status, message, type=kind, code=code, headers=headers)


_FIELD = re.compile(r"^[a-z0-9_][a-z0-9_-]*$")  # a field, or a map key such as a token id
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def _field_path(loc: tuple) -> str:
    """("body", "messages", 0, "content", "str") -> "messages[0].content" (pydantic's union-member tags,
    like "str" or "list[ContentPart]", are not fields)."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _FIELD.match(part) and part not in _UNION_TAGS:
            out += f".{part}" if out else part
    return out


def validation_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return APIError(400, f"malformed JSON body: {detail}".rstrip(": "), code="invalid_json")
    message = first.get("msg", "invalid value")
    named = (first.get("ctx") or {}).get("param")  # a check of the whole body names the field itself
    if named:
        return APIError(400, message, param=named, code="invalid_value")
    field = _field_path(tuple(first.get("loc", ())))
    return APIError(400, f"{field}: {message}" if field else message, param=field or None, code="invalid_value")


def anthropic_body(error: APIError) -> dict:
    kind = _ANTHROPIC_TYPES.get(error.status) or ("invalid_request_error" if 400 <= error.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def anthropic_response(error: APIError) -> JSONResponse:
    return JSONResponse(anthropic_body(error), status_code=error.status, headers=error.headers)


def ollama_response(error: APIError) -> JSONResponse:
    """Ollama's clients read a plain-string error."""
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)


def response_for(path: str, error: APIError) -> JSONResponse:
    """`error` in the shape the clients of `path`'s surface read, for an answer given before a route of
    that surface runs (a middleware's refusal, no route matched): their SDKs parse only their own."""
    if path.startswith(OLLAMA_PREFIX):
        return ollama_response(error)
    if path.endswith(ANTHROPIC_SUFFIXES):
        return anthropic_response(error)
    return error.response()


def install(app: FastAPI) -> None:
    """Registers the handlers that turn every failure into the OpenAI error body."""

    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(UpstreamError)
    async def _upstream(_: Request, exc: UpstreamError) -> JSONResponse:
        return from_upstream(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return response_for(request.url.path, APIError(exc.status_code, message, headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RecursionError):  # only a hostile body nests this deep, whichever parser met it
            return APIError(400, "the request body is nested too deeply to parse", code="invalid_json").response()
        log.exception("unhandled error", extra={"fields": {"path": request.url.path}})
        return APIError(500, f"internal error: {type(exc).__name__}", code="internal_error").response()
