"""Operations routes: GET /healthz (ready only when all three services answer SERVING), GET /readyz (ready
to serve inference: the Store and the Runner with its preloaded models) and GET /metrics
(the gateway's Prometheus registry, plus the Runner's metrics when MODELRUNNER_RUNNER_METRICS_URL is set)."""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelrunner.gateway.backends import Backends
from modelrunner.gateway.errors import APIError

log = logging.getLogger(__name__)
RUNNER_METRICS_TIMEOUT_S = 2.0


class _Families:
    """A collector of already-parsed metric families (the Runner's), for re-rendering."""

    def __init__(self, families) -> None:
        self.families = list(families)

    def collect(self):
        return self.families


def _family_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


async def _runner_metrics(url: str, exclude: set[str]) -> bytes:
    """The Runner's metrics without the families the gateway already exposes (process_*, python_*)."""
    try:
        async with httpx.AsyncClient(timeout=RUNNER_METRICS_TIMEOUT_S) as client:
            reply = await client.get(url)
            reply.raise_for_status()
        families = [f for f in text_string_to_metric_families(reply.text) if f.name not in exclude]
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("runner metrics unavailable", extra={"fields": {"url": url, "error": str(exc)}})
        return f"# runner metrics unavailable from {url}: {type(exc).__name__}\n".encode()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def install(app: FastAPI) -> None:
    @app.get("/healthz", tags=["Operations"], summary="200 when the Store, Distribution and Runner are serving")
    async def healthz(request: Request) -> JSONResponse:
        backends: Backends = request.app.state.backends
        return _answer(backends, await backends.health())

    @app.get("/readyz", tags=["Operations"],
             summary="200 when this gateway can serve inference: the Store and its Runner (with its preloaded models)")
    # /health: where llama-server and vLLM answer it, so clients and benchmarks written for them
    # (GuideLLM checks it before it starts) find the server up.
    @app.get("/health", tags=["Operations"], summary="As /readyz, at llama-server's and vLLM's path")
    async def readyz(request: Request) -> JSONResponse:
        backends: Backends = request.app.state.backends
        return _answer(backends, await backends.serving_health())

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        own = generate_latest(REGISTRY)
        url = request.app.state.options.runner_metrics_url
        if url:
            own += await _runner_metrics(url, _family_names(own.decode()))
        return Response(own, media_type=CONTENT_TYPE_LATEST)


def _answer(backends: Backends, health: dict[str, bool]) -> JSONResponse:
    """200 naming the services, or 503 naming those not serving and where they were asked."""
    down = [name for name, ok in health.items() if not ok]
    if down:
        addresses = {s.name: s.address for s in backends.all()}
        names = ", ".join(f"{name} ({addresses[name]})" for name in down)
        raise APIError(503, f"not ready: {names} not serving", code="service_unavailable")
    return JSONResponse({"status": "ok", "services": {name: "SERVING" for name in health}})
