"""ASGI middleware around every route: the optional API key, the request body limit, JSON bodies.
Pure ASGI (no BaseHTTPMiddleware), so streamed answers keep their context (and trace span)."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelrunner.gateway.errors import APIError

OPEN_PATHS = frozenset({"/healthz"})  # probes need no key


async def send_error(send: Send, error: APIError) -> None:
    await error.response()(scope={"type": "http"}, receive=None, send=send)  # type: ignore[arg-type]


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}


class JsonBodyMiddleware:
    """Reads every request body as JSON whatever its Content-Type says, as llama.cpp's server and Docker
    Model Runner do: `curl -d '{...}'` sends application/x-www-form-urlencoded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class ApiKeyMiddleware:
    """Requires `Authorization: Bearer <key>` (constant-time compare) when a key is configured."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and scope["method"] != "OPTIONS":
            given = _headers(scope).get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, self.expected):
                message = "missing or wrong API key: send `Authorization: Bearer <MODELRUNNER_API_KEY>`"
                await send_error(send, APIError(401, message, code="invalid_api_key",
                                                headers={"WWW-Authenticate": "Bearer"}))
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Answers 413 to a body over `limit` bytes, by Content-Length or (chunked) as it arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> APIError:
        return APIError(413, f"request body is larger than {self.limit} bytes", code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = _headers(scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await send_error(send, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await send_error(send, self._too_large())
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
