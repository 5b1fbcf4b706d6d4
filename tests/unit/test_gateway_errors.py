"""Errors and edges: status mapping, validation 400s, 413, 429 Retry-After, API key, CORS, health,
metrics, a service that is down, and a client that disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json

import grpc
import httpx
import pytest
import uvicorn
from grpc_health.v1 import health_pb2

from modelrunner.common.errors import DISK_FULL, REASON_KEY
from modelrunner.gateway.backends import RUNNER_SERVICE, Service
from modelrunner.gateway.errors import APIError, anthropic_body, from_upstream
from modelrunner.gateway.settings import GatewayOptions
from tests.conftest import free_port
from tests.support.gateway_fakes import fake_services, gateway_client

CHAT = {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw():
    async with gateway_client() as pair:
        yield pair


async def test_unknown_model_is_404_naming_it_with_pull_hint(gw):
    client, _ = gw
    reply = await client.post("/v1/chat/completions", json={**CHAT, "model": "ai/missing"})
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert "ai/missing" in error["message"] and "modelrunner pull ai/missing:latest" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


async def test_queue_full_is_429_with_retry_after(gw):
    client, _ = gw
    reply = await client.post("/v1/chat/completions", json={**CHAT, "model": "ai/busy", "stream": True})
    assert reply.status_code == 429 and reply.headers["retry-after"] == "7"
    assert reply.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT["messages"]}, "model"),
        ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({**CHAT, "temperature": "hot"}, "temperature"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({**CHAT, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({**CHAT, "model": "Bad Name!"}, "model"),
        ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
    ],
)
async def test_wrong_field_is_400_naming_it(gw, body, param):
    client, _ = gw
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and param in error["message"]


async def test_malformed_json_and_form_content_type(gw):
    client, _ = gw
    reply = await client.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"
    # curl -d sends application/x-www-form-urlencoded: refused, as a web page's form post is (issue 16).
    form = await client.post("/v1/chat/completions", content=json.dumps(CHAT).encode(),
                             headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and "Content-Type: application/json" in form.json()["error"]["message"]


async def test_body_over_limit_is_413():
    async with gateway_client(GatewayOptions(max_body_bytes=1000)) as (client, _):
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
        assert (await client.post("/v1/chat/completions", json=big)).status_code == 413

        async def chunked():
            yield b'{"model": "ai/tiny", '
            yield b'"x": "' + b"y" * 2000 + b'"}'

        reply = await client.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
        assert reply.status_code == 413 and "1000 bytes" in reply.json()["error"]["message"]


async def test_api_key():
    async with gateway_client(GatewayOptions(api_key="s3cret")) as (client, _):
        missing = await client.get("/v1/models")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


async def test_cors_preflight_before_api_key():
    options = GatewayOptions(api_key="k", origins=["http://app.example"])
    async with gateway_client(options) as (client, _):
        reply = await client.options("/v1/chat/completions", headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == "http://app.example"


async def test_service_down_is_503_naming_it_and_fast():
    port = free_port()
    async with gateway_client(address=f"127.0.0.1:{port}") as (client, _):
        started = asyncio.get_running_loop().time()
        reply = await client.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 503 and f"runner service at 127.0.0.1:{port}" in reply.json()["error"]["message"]
        health = await client.get("/healthz")
        assert health.status_code == 503 and "store" in health.json()["error"]["message"]
        assert asyncio.get_running_loop().time() - started < 5


class StateOnly:
    """A channel as Service._error looks at it: its connectivity state only."""

    def __init__(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.state


READY, DOWN, IDLE = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                     grpc.ChannelConnectivity.IDLE)
# What grpc's aio client sets when a write fails in the core (the Store SIGKILLed mid-upload): its own
# details and, as debug string, the failed batch.
CORE_DETAILS = "Internal error from Core"
CORE_DEBUG = 'Failed "execute_batch": (<grpc._cython.cygrpc.SendMessageOperation object at 0x7f3a2c1e5b70>,)'


@pytest.mark.parametrize(
    ("code", "details", "state", "status"),
    [
        (grpc.StatusCode.INTERNAL, CORE_DETAILS, READY, 503),  # the core noticed before the channel did
        (grpc.StatusCode.INTERNAL, CORE_DETAILS, DOWN, 503),
        (grpc.StatusCode.INTERNAL, "index.json: unexpected end of data", DOWN, 503),  # the connection is gone
        (grpc.StatusCode.INTERNAL, "index.json: unexpected end of data", IDLE, 503),
        (grpc.StatusCode.INTERNAL, "index.json: unexpected end of data", READY, 500),  # the Store's own error
        (grpc.StatusCode.INTERNAL, "internal error from core", READY, 500),  # not the core's exact words
        (grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)", DOWN, 503),
        (grpc.StatusCode.UNAVAILABLE, "Stream removed (recvmsg:Connection reset by peer (104))", READY, 503),
        (grpc.StatusCode.UNAVAILABLE, "Error in HTTP transport completing operation: on_write_finished_cb "
                                      "write_state=IDLE refs=0", READY, 503),
    ],
)
def test_a_broken_connection_is_503_and_the_services_own_internal_stays_500(code, details, state, status):
    store = Service("store", "127.0.0.1:1", StateOnly(state), stub=None)
    error = from_upstream(store._error(grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details,
                                                           CORE_DEBUG)))
    assert error.status == status, error.message
    if status == 503:
        assert error.type == "service_unavailable" and error.code == "unavailable"
        assert "store service at 127.0.0.1:1" in error.message and details in error.message
        assert "went away" in error.message and "retry" in error.message
    else:
        assert (error.type, error.code, error.message) == ("server_error", "internal", details)


def test_a_service_reporting_unavailable_keeps_its_own_words():
    """A live service that says UNAVAILABLE itself (a registry it could not reach) is not `went away`."""
    distribution = Service("distribution", "127.0.0.1:1", StateOnly(READY), stub=None)
    details = "registry example.com is unreachable (connection refused)"
    error = from_upstream(distribution._error(grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details)))
    assert (error.status, error.message) == (503, details)


def test_a_full_disk_is_507_saying_so_and_a_full_queue_stays_429_with_retry_after():
    """Both are RESOURCE_EXHAUSTED: the Store's reason tells them apart, so a full volume is not a 429
    asking the client to retry in a second."""
    store = Service("store", "127.0.0.1:1", StateOnly(READY), stub=None)
    details = "blob sha256:ab (16.78 MB) does not fit on the models volume: the disk is full"

    def answer(trailers: tuple) -> APIError:
        return from_upstream(store._error(grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details)))

    full = answer(((REASON_KEY, DISK_FULL),))
    assert (full.status, full.type, full.code, full.message) == (507, "server_error", "insufficient_storage", details)
    assert "Retry-After" not in full.headers
    busy = answer(())
    assert (busy.status, busy.code, busy.headers) == (429, "resource_exhausted", {"Retry-After": "1"})


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (405, "invalid_request_error"), (411, "invalid_request_error"),
     (415, "invalid_request_error"), (422, "invalid_request_error"), (499, "invalid_request_error"),
     (404, "not_found_error"), (429, "rate_limit_error"), (500, "server_error"), (502, "server_error"),
     (503, "service_unavailable"), (504, "server_error")],
)
def test_every_4xx_has_a_client_error_type(status, kind):
    assert APIError(status, "x").type == kind
    anthropic = anthropic_body(APIError(status, "x"))["error"]["type"]  # Anthropic's types: its own server errors
    assert (anthropic in ("api_error", "timeout_error", "overloaded_error")) == (status >= 500)


async def test_healthz_and_metrics(gw):
    client, _ = gw
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json()["services"]["runner"] == "SERVING"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "python_info" in metrics.text or "process_" in metrics.text


async def test_runner_metrics_are_appended_without_duplicates():
    runner_port = free_port()

    async def runner_metrics(scope, receive, send):
        body = (b"# HELP llamacpp_tokens_predicted_total Tokens.\n# TYPE llamacpp_tokens_predicted_total counter\n"
                b"llamacpp_tokens_predicted_total 42.0\n# HELP python_info dup\n# TYPE python_info gauge\npython_info 1.0\n")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    server = uvicorn.Server(uvicorn.Config(runner_metrics, host="127.0.0.1", port=runner_port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        options = GatewayOptions(runner_metrics_url=f"http://127.0.0.1:{runner_port}/metrics")
        async with gateway_client(options) as (client, _):
            text = (await client.get("/metrics")).text
        assert "llamacpp_tokens_predicted_total 42.0" in text
        assert text.count("# TYPE python_info") <= 1
    finally:
        server.should_exit = True
        await task


async def _serve_app(app, port: int):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_cancels_the_grpc_call(stream):
    from modelrunner.gateway.app import create_app
    from modelrunner.gateway.backends import Backends

    async with fake_services() as (address, fakes):
        backends = Backends.connect(address, address, address)
        port = free_port()
        server, task = await _serve_app(create_app(backends), port)
        try:
            body = {**CHAT, "model": "ai/slow", "stream": stream}
            async with httpx.AsyncClient(timeout=5) as client:
                if stream:
                    async with client.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as reply:
                        async for line in reply.aiter_lines():
                            if line.startswith("data: "):
                                break  # got the first event; hang up
                else:  # hang up once the Runner is answering, whenever that is on a loaded machine
                    post = asyncio.create_task(client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body))
                    await asyncio.wait_for(fakes.runner.slow_started.wait(), 60)
                    post.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await post
            await asyncio.wait_for(fakes.runner.cancelled.wait(), 60)
        finally:
            server.should_exit = True
            await task
            await backends.close()


async def test_readyz_waits_for_the_runner_service_not_the_distribution(gw):
    """/readyz (a pool replica's readiness) follows the Runner service's own health, which a Runner
    preloading its models keeps NOT_SERVING; /healthz (the whole stack's) does not look there."""
    client, fakes = gw
    await fakes.health.set(RUNNER_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    waiting = await client.get("/readyz")
    assert waiting.status_code == 503 and "runner" in waiting.json()["error"]["message"]
    assert (await client.get("/health")).status_code == 503  # llama-server's and vLLM's path, the same answer
    assert (await client.get("/healthz")).status_code == 200
    await fakes.health.set(RUNNER_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["services"] == {"store": "SERVING", "runner": "SERVING"}
    assert (await client.get("/health")).json() == ready.json()
