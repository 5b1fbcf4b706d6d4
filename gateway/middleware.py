"""ASGI middleware around every route: one Host and one Origin at most, the Host and Origin checks, the
optional API key, the request body's Content-Type and size. Pure ASGI (no BaseHTTPMiddleware), so streamed
answers keep their context (and trace span)."""

from __future__ import annotations

import hmac

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelrunner.gateway import edge_policy
from modelrunner.gateway.errors import APIError, response_for

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/health", "/"})  # probes need no key; nor does the web page, which asks for it
OPEN_PREFIXES = ("/ui/",)  # the page's static files: no data, nothing a key protects


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


async def send_error(scope: Scope, send: Send, error: APIError) -> None:
    """`error` in the shape of the surface the request was for (Ollama's, Anthropic's or OpenAI's)."""
    await response_for(scope.get("path", ""), error)(scope={"type": "http"}, receive=None, send=send)  # type: ignore[arg-type]


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lowercase name; a repeated one keeps its last value (Host and Origin
    cannot repeat: UniqueHeadersMiddleware refused such a request first)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def accepts(*media_types: str) -> dict:
    """`openapi_extra` for a route whose body is not JSON (an upload): documents the types in
    /openapi.json, and ContentTypeMiddleware lets exactly these in. Only on a route of the app's own
    router (`app.add_api_route`): FastAPI 0.165 keeps an included router's routes behind one opaque
    entry, which the middleware matches as JSON-only."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": {media_type: binary for media_type in media_types}}}


def media_type(content_type: str) -> str:
    """"Application/JSON; charset=utf-8" -> "application/json"."""
    return content_type.partition(";")[0].strip().lower()


def declared_types(route: object) -> frozenset[str]:
    """The media types a route's body may have, as its OpenAPI requestBody says: an explicit
    `openapi_extra` (see `accepts`), else FastAPI's body field (Form, File), else JSON."""
    extra = getattr(route, "openapi_extra", None) or {}
    content = extra.get("requestBody", {}).get("content")
    if content:
        return frozenset(media_type(t) for t in content)
    body = getattr(route, "body_field", None)
    declared = getattr(getattr(body, "field_info", None), "media_type", None) if body is not None else None
    return frozenset({media_type(declared or JSON)})


class ContentTypeMiddleware:
    """Refuses (415) a body whose Content-Type the route does not declare: JSON unless the route says
    otherwise. A web page may POST text/plain or a form cross-site with no CORS preflight; only
    `application/json` needs one, so a JSON-only route cannot be driven by a page the user visits. Kept
    for clients that send no Origin too (`curl -d`, as Ollama's docs write it): a browser extension or
    privacy setting may strip a page's Origin, and the 415 says what to add."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _route_types(scope: Scope) -> frozenset[str]:
        """The types of the route the router will pick (the app's routes, matched as it matches them)."""
        for route in scope["app"].router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return declared_types(route)
        return frozenset({JSON})  # no such route: the router answers 404/405 after this

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            headers = _headers(scope)
            given = headers.get("content-type")
            has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
            if given is not None or has_body:
                allowed = self._route_types(scope)
                if media_type(given or "") not in allowed:
                    wanted = " or ".join(f"`Content-Type: {t}`" for t in sorted(allowed))
                    got = f"got {given!r}" if given is not None else "it had no Content-Type"
                    if media_type(given or "") == FORM and JSON in allowed:  # what `curl -d` sends
                        got += ": with curl, add -H 'Content-Type: application/json'"
                    await send_error(scope, send, APIError(
                        415, f"{scope['method']} {scope['path']} takes a body of {wanted} ({got})",
                        type="invalid_request_error", code="unsupported_media_type",
                    ))
                    return
        await self.app(scope, receive, send)


ONE_PER_REQUEST = ("host", "origin")


def _repeated(scope: Scope) -> str | None:
    """The first of ONE_PER_REQUEST the request carries more than once: as two fields, or as one that a
    proxy joined with a comma (Envoy does; neither value ever holds one)."""
    counts = dict.fromkeys(ONE_PER_REQUEST, 0)
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        if name in counts:
            counts[name] += 1 + value.count(b",")
    return next((name for name, count in counts.items() if count > 1), None)


class UniqueHeadersMiddleware:
    """Refuses (400) a request with more than one Host header (RFC 9112 3.2 says a server must) or
    more than one Origin: each check (Host, Origin, CORS) would otherwise judge a different copy, or a
    proxy's joined value by its first, and one allowed value would carry a foreign one through. Always
    on, and outermost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (name := _repeated(scope)) is not None:
            message = f"the request has more than one {name.capitalize()} header: send exactly one"
            await send_error(scope, send, APIError(400, message, code="duplicate_header"))
            return
        await self.app(scope, receive, send)


class HostMiddleware:
    """Refuses (403) a Host header that is not this machine's (DNS rebinding: a page whose name now
    resolves to 127.0.0.1 is same-origin with the API). On when bound to loopback or configured."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = edge_policy.normalize_hosts(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = _headers(scope).get("host", "")
            if not edge_policy.host_allowed(host, self.allowed):
                message = (f"Host {host!r} is not this machine: add it to MODELRUNNER_ALLOWED_HOSTS to serve it "
                           "(refused as DNS rebinding otherwise)")
                await send_error(scope, send, APIError(403, message, code="host_not_allowed"))
                return
        await self.app(scope, receive, send)


class OriginMiddleware:
    """Refuses (403) a request whose Origin header names a page that is neither the stack's own nor in
    MODELRUNNER_ORIGINS. Requests without an Origin (curl, SDKs, the CLI) pass."""

    def __init__(self, app: ASGIApp, origins: list[str], hosts: list[str]) -> None:
        self.app = app
        self.origins = edge_policy.normalize_origins(origins)
        self.hosts = edge_policy.normalize_hosts(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = _headers(scope)
            origin = headers.get("origin")
            if origin is not None and not edge_policy.origin_allowed(
                origin, headers.get("host", ""), self.origins, self.hosts
            ):
                message = f"Origin {origin!r} may not use this API: add it to MODELRUNNER_ORIGINS to allow it"
                await send_error(scope, send, APIError(403, message, code="origin_not_allowed"))
                return
        await self.app(scope, receive, send)


class ApiKeyMiddleware:
    """Requires `Authorization: Bearer <key>` or `x-api-key: <key>` (Anthropic's clients) when a key is
    configured; constant-time compares, and neither the key nor what was sent is ever logged or echoed."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.bearer = f"Bearer {api_key}".encode()
        self.key = api_key.encode()

    def _authorized(self, headers: dict[str, str]) -> bool:
        bearer = hmac.compare_digest(headers.get("authorization", "").encode("latin-1"), self.bearer)
        api_key = hmac.compare_digest(headers.get("x-api-key", "").encode("latin-1"), self.key)
        return bearer | api_key  # both compared: the time taken says nothing about which was sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _open(scope["path"]) and scope["method"] != "OPTIONS":
            if not self._authorized(_headers(scope)):
                message = "missing or wrong API key: send `Authorization: Bearer <MODELRUNNER_API_KEY>`"
                await send_error(scope, send, APIError(401, message, code="invalid_api_key",
                                                headers={"WWW-Authenticate": "Bearer"}))
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Answers 413 to a JSON body over `limit` bytes, by Content-Length or (chunked) as it arrives.

    Runs inside ContentTypeMiddleware, so a body of another type is one its route declared (an upload):
    it streams through unbuffered and unbounded here, for the route to bound (the Store checks the size
    the upload declared)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> APIError:
        return APIError(413, f"request body is larger than {self.limit} bytes", code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        upload = media_type(headers.get("content-type", JSON)) != JSON
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or upload:
            await self.app(scope, receive, send)
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await send_error(scope, send, self._too_large())
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
                await send_error(scope, send, self._too_large())
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
