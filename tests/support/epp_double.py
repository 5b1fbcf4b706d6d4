"""A test double of the endpoint picker (the Gateway API Inference Extension's EPP), speaking its
protocol to Envoy: envoy.service.ext_proc.v3.ExternalProcessor/Process, one bidirectional stream per
HTTP request, in the processing mode the EPP's own Envoy config sets (request and response headers
SEND, bodies FULL_DUPLEX_STREAMED, trailers SEND).

As the EPP does, it waits for the whole request body, then answers the request headers with
`x-gateway-destination-endpoint: ip:port` (and the same in `envoy.lb` dynamic metadata), clearing the
route cache so Envoy routes on it, and hands the body back unchanged; 503 (an immediate response) when
no endpoint is ready. Response headers, bodies and trailers pass back unchanged.

Its rule is the EPP's queue-first scorer in its simplest form: scrape every endpoint's Runner
`/metrics` at each request; skip those whose scrape fails; fewest requests waiting
(`modelrunner_queue_depth`), then fewest running (`modelrunner_active_sequences`), summed over the
models of the replica (they share its machine); ties go round-robin, so an idle pool is spread.

Run: EPP_DOUBLE_LISTEN=127.0.0.1:9002 EPP_DOUBLE_POOL=10.0.0.5:12434=http://10.0.0.5:9090/metrics,...
python -m tests.support.epp_double
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc
import httpx
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

DESTINATION = "x-gateway-destination-endpoint"
WAITING = "modelrunner_queue_depth"
RUNNING = "modelrunner_active_sequences"
SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
BODY_CHUNK = 62000  # the EPP's bound per streamed chunk (Envoy's is 64 KiB)
SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Load:
    waiting: float
    running: float


def parse_load(text: str) -> Load:
    """A replica's load from its Prometheus text: each gauge summed over its `model` series."""
    sums = {WAITING: 0.0, RUNNING: 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in sums:
                sums[sample.name] += sample.value
    return Load(sums[WAITING], sums[RUNNING])


class Picker:
    """Chooses among `pool` (endpoint ip:port -> its metrics URL) by the rule above."""

    def __init__(self, pool: Mapping[str, str]) -> None:
        self._pool = dict(sorted(pool.items()))
        self._turn = 0
        self._client = httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S)

    async def _scrape(self, url: str) -> Load | None:
        try:
            reply = await self._client.get(url)
            reply.raise_for_status()
            return parse_load(reply.text)
        except (httpx.HTTPError, ValueError):
            return None  # down, or not a model server: not a candidate

    async def pick(self) -> str | None:
        loads = await asyncio.gather(*(self._scrape(url) for url in self._pool.values()))
        up = {endpoint: load for endpoint, load in zip(self._pool, loads) if load is not None}
        if not up:
            return None
        best = min((load.waiting, load.running) for load in up.values())
        tied = [endpoint for endpoint, load in up.items() if (load.waiting, load.running) == best]
        if len(tied) == 1:
            return tied[0]
        self._turn += 1
        return tied[self._turn % len(tied)]

    async def close(self) -> None:
        await self._client.aclose()


def _headers_response(endpoint: str, body_size: int) -> ext_proc.ProcessingResponse:
    """The EPP's answer to the request headers: the destination, the body's length, a new route."""
    values = {DESTINATION: endpoint, **({"content-length": str(body_size)} if body_size else {})}
    set_headers = [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                                   append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
        for key, value in values.items()
    ]
    metadata = struct_pb2.Struct()
    metadata.update({"envoy.lb": {DESTINATION: endpoint}})
    return ext_proc.ProcessingResponse(
        request_headers=ext_proc.HeadersResponse(response=ext_proc.CommonResponse(
            clear_route_cache=True, header_mutation=ext_proc.HeaderMutation(set_headers=set_headers))),
        dynamic_metadata=metadata,
    )


def _streamed(body: bytes, end_of_stream: bool) -> ext_proc.CommonResponse:
    return ext_proc.CommonResponse(body_mutation=ext_proc.BodyMutation(
        streamed_response=ext_proc.StreamedBodyResponse(body=body, end_of_stream=end_of_stream)))


def _request_body_responses(body: bytes) -> list[ext_proc.ProcessingResponse]:
    chunks = [body[i:i + BODY_CHUNK] for i in range(0, len(body), BODY_CHUNK)] or [b""]
    return [ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse(response=_streamed(chunk, i == len(chunks) - 1)))
            for i, chunk in enumerate(chunks)]


def _unavailable() -> ext_proc.ProcessingResponse:
    return ext_proc.ProcessingResponse(immediate_response=ext_proc.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
        body=b"no endpoint of the pool is ready"))


class EndpointPicker(ext_proc_grpc.ExternalProcessorServicer):
    def __init__(self, picker: Picker) -> None:
        self._picker = picker

    async def Process(
        self, requests: AsyncIterator[ext_proc.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ext_proc.ProcessingResponse]:
        body = b""
        async for request in requests:
            phase = request.WhichOneof("request")
            if phase == "request_headers":
                if request.request_headers.end_of_stream:  # no body: route at once
                    async for response in self._route(None):
                        yield response
            elif phase == "request_body":
                body += request.request_body.body
                if request.request_body.end_of_stream:
                    async for response in self._route(body):
                        yield response
            elif phase == "request_trailers":
                yield ext_proc.ProcessingResponse(request_trailers=ext_proc.TrailersResponse())
            elif phase == "response_headers":
                yield ext_proc.ProcessingResponse(response_headers=ext_proc.HeadersResponse())
            elif phase == "response_body":
                chunk = request.response_body
                yield ext_proc.ProcessingResponse(
                    response_body=ext_proc.BodyResponse(response=_streamed(chunk.body, chunk.end_of_stream)))
            elif phase == "response_trailers":
                yield ext_proc.ProcessingResponse(response_trailers=ext_proc.TrailersResponse())

    async def _route(self, body: bytes | None) -> AsyncIterator[ext_proc.ProcessingResponse]:
        """The answers once the request is whole: its headers' (routed), then its body back."""
        endpoint = await self._picker.pick()
        if endpoint is None:
            yield _unavailable()
            return
        yield _headers_response(endpoint, len(body or b""))
        if body is not None:
            for response in _request_body_responses(body):
                yield response


def parse_pool(text: str) -> dict[str, str]:
    """`ip:port=metrics-url,...` as a mapping."""
    pool = {}
    for item in filter(None, text.split(",")):
        endpoint, _, url = item.partition("=")
        if not url:
            raise ValueError(f"{item!r} is not ENDPOINT=METRICS_URL")
        pool[endpoint] = url
    return pool


async def serve(listen: str, pool: Mapping[str, str]) -> None:
    """Serves until SIGTERM or SIGINT; grpc.health.v1 answers SERVING for the ext_proc service."""
    picker = Picker(pool)
    server = grpc.aio.server()
    ext_proc_grpc.add_ExternalProcessorServicer_to_server(EndpointPicker(picker), server)
    checks = health.aio.HealthServicer()
    for name in ("", SERVICE):
        await checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=1)
    await picker.close()


if __name__ == "__main__":
    asyncio.run(serve(os.environ["EPP_DOUBLE_LISTEN"], parse_pool(os.environ["EPP_DOUBLE_POOL"])))
