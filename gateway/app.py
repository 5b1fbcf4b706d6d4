"""The gateway's HTTP app: the OpenAI, Responses, Anthropic, Ollama, rerank and Docker Model Runner routes,
the request recorder, the web page, /healthz and /metrics, all by gRPC calls to the three services it is
given (tests pass in-process fakes)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from modelrunner.gateway import (
    anthropic_routes,
    dmr_routes,
    edge_routes,
    errors,
    ollama_routes,
    openai_routes,
    ops_routes,
    recorder_routes,
    rerank_routes,
    responses_routes,
    web_routes,
)
from modelrunner.gateway.backends import Backends
from modelrunner.gateway.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    ContentTypeMiddleware,
    HostMiddleware,
    OriginMiddleware,
    UniqueHeadersMiddleware,
)
from modelrunner.gateway.settings import GatewayOptions


def create_app(backends: Backends, options: GatewayOptions | None = None) -> FastAPI:
    options = options or GatewayOptions()
    app = FastAPI(
        title="Model Runner",
        version="0.1.0",
        description="OpenAI-compatible and Docker Model Runner REST API, served over the gRPC services.",
        telemetry={"operation_spans": False},
        responses=errors.ERROR_RESPONSES,  # one SERVER span a request; FastAPI's inner spans are noise
    )
    app.state.backends = backends
    app.state.options = options
    errors.install(app)
    router = openai_routes.build_router()
    for prefix in openai_routes.PREFIXES:
        app.include_router(router, prefix=prefix)
    anthropic_routes.install(app)
    responses_routes.install(app)
    ollama_routes.install(app)
    rerank_routes.install(app)
    dmr_routes.install(app)
    ops_routes.install(app)
    web_routes.install(app)
    edge_routes.install(app)
    # Added innermost first, so they run: one Host and one Origin at most, Host, Origin, CORS (answers
    # allowed preflights before the key check), API key, Content-Type (before the body is read), body
    # size. FastAPI's native telemetry wraps them all: a SERVER span per request continuing the caller's
    # W3C traceparent (the gRPC client interceptor carries it on to each service) and http.server.* metrics.
    recorder_routes.install(app, options)  # its middleware innermost: it records what got through
    app.add_middleware(BodyLimitMiddleware, limit=options.max_body_bytes)
    app.add_middleware(ContentTypeMiddleware)
    if options.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=options.api_key)
    if options.origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=options.origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials="*" not in options.origins,
        )
    app.add_middleware(OriginMiddleware, origins=options.origins, hosts=options.allowed_hosts or [])
    if options.allowed_hosts is not None:
        app.add_middleware(HostMiddleware, allowed=options.allowed_hosts)
    app.add_middleware(UniqueHeadersMiddleware)
    return app
