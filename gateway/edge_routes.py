"""The edge's one checker: Envoy's ext_authz asks `/_authz/<original path>` before every request it
sends to the services itself (the transcoded /models and /engines paths, raw gRPC). The request passed
the same middleware every REST route does (Host, Origin, API key, Content-Type), so reaching the route
means allowed; Envoy answers the client with whatever refusal the middleware gave instead."""

from __future__ import annotations

from fastapi import FastAPI, Response

from modelrunner.gateway.middleware import JSON, accepts

AUTHZ_PREFIX = "/_authz"
# What Envoy's check request carries over from the original: JSON for the transcoder, gRPC as such.
CHECKED_TYPES = (JSON, "application/grpc", "application/grpc+proto")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def install(app: FastAPI) -> None:
    @app.api_route(f"{AUTHZ_PREFIX}/{{path:path}}", methods=METHODS, include_in_schema=False,
                   openapi_extra=accepts(*CHECKED_TYPES))
    async def authorize(path: str) -> Response:
        return Response(status_code=200)
