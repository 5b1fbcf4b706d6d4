"""The gateway's HTTP app: OpenAI routes, Docker Model Runner routes, /healthz and /metrics, all by gRPC
calls to the three services it is given (tests pass in-process fakes)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from modelrunner.gateway import dmr_routes, errors, ops_routes, openai_routes
from modelrunner.gateway.backends import Backends
from modelrunner.gateway.middleware import ApiKeyMiddleware, BodyLimitMiddleware, JsonBodyMiddleware
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
    dmr_routes.install(app)
    ops_routes.install(app)
    # Added innermost first: CORS answers preflights before the key check. FastAPI's native telemetry
    # wraps them all: a SERVER span per request continuing the caller's W3C traceparent (the gRPC
    # client interceptor carries it on to each service) and http.server.* metrics.
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=options.max_body_bytes)
    if options.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=options.api_key)
    if options.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=options.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials="*" not in options.cors_origins,
        )
    return app
