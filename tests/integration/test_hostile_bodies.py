"""Hostile values against the real stack (Store, Distribution, Runner, gateway processes, the tiny GGUF):
each is a 400 naming the field, over HTTP and over gRPC (which skips the gateway), the connection stays
open, and the listings (/api/ps, /engines/ps) still answer afterwards."""

from __future__ import annotations

import json
import socket
import threading
import time

import grpc
import httpx
import ollama
import openai
import pytest

from modelrunner.gateway.ollama_convert import NEVER
from modelrunner.v1 import distribution_pb2, distribution_pb2_grpc, runner_pb2, runner_pb2_grpc
from tests.support.stack import Stack, serving

HI = [{"role": "user", "content": "hi"}]
HUGE_INT = "9" * 400
BAD_REGISTRIES = ["localhost:65536", "999.999.999.999:5000", "xn--zz:5000"]
DMR_ROUTES = ["/models/create", "/models/package", "/engines/_configure", "/engines/unload"]
UNCARRIABLE = {
    "not UTF-8": b'{"from": "ai/x", "model": "ai/tiny", "name": "h\xff\xfe"}',
    "an integer of 5000 digits": b'{"from": "ai/x", "model": "ai/tiny", "context-size": ' + b"9" * 5000 + b"}",
    "a lone surrogate key": b'{"from": "ai/x", "model": "ai/tiny", "\\ud800": 1}',
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_gguf):
    with serving(tmp_path_factory.mktemp("hostile-bodies"), {"ai/tiny": tiny_gguf}) as running:
        yield running


@pytest.fixture
def http(stack: Stack):
    with httpx.Client(base_url=stack.url, timeout=120) as client:
        yield client


@pytest.fixture
def olm(stack: Stack) -> ollama.Client:
    return ollama.Client(host=stack.url, timeout=120)


def assert_listings_answer(http: httpx.Client) -> None:
    for path in ("/api/ps", "/engines/ps"):
        reply = http.get(path)
        assert reply.status_code == 200, (path, reply.text)


def assert_kept_open(reply: httpx.Response) -> None:
    assert reply.headers.get("connection", "").lower() != "close", reply.headers


# keep_alive --------------------------------------------------------------------------------------

def test_openai_keep_alive_past_ten_years_is_a_400(oai, http):
    with pytest.raises(openai.BadRequestError) as refused:
        oai.completions.create(model="ai/tiny", prompt="hi", max_tokens=1, extra_body={"keep_alive": "1e300"})
    assert refused.value.param == "keep_alive" and "10 years" in refused.value.message
    assert_listings_answer(http)
    oai.completions.create(model="ai/tiny", prompt="hi", max_tokens=1, extra_body={"keep_alive": "10m"})
    running = http.get("/api/ps").json()["models"]
    assert running and running[0]["expires_at"] not in (NEVER, "9999-12-31T23:59:59Z")  # a real expiry


@pytest.mark.parametrize("keep_alive", ["9999999999h", 1e18])
def test_ollama_keep_alive_past_ten_years_is_a_400(olm, http, keep_alive):
    with pytest.raises(ollama.ResponseError) as refused:
        olm.generate(model="tiny", prompt="hi", options={"num_predict": 1}, keep_alive=keep_alive)
    assert refused.value.status_code == 400 and refused.value.error.startswith("keep_alive:")
    assert_listings_answer(http)


@pytest.mark.parametrize(("path", "fields"), [
    ("/api/chat", '"messages": [{"role": "user", "content": "hi"}]'), ("/api/generate", '"prompt": "hi"'),
    ("/api/embed", '"input": "hi"'), ("/api/embeddings", '"prompt": "hi"'),
])
def test_ollama_keep_alive_of_400_digits_is_a_400(http, path, fields):
    raw = f'{{"model": "tiny", "stream": false, {fields}, "keep_alive": {HUGE_INT}}}'.encode()
    reply = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"].startswith("keep_alive:"), reply.text
    assert_kept_open(reply)
    assert_listings_answer(http)


def test_configure_keep_alive_past_ten_years_is_a_400_and_not_stored(http):
    reply = http.post("/engines/_configure", json={"model": "ai/tiny", "keep_alive": "1e300"})
    assert reply.status_code == 400 and "keep_alive" in reply.json()["error"]["message"], reply.text
    assert all(s.get("keep_alive") != "1e300" for s in http.get("/engines/_configure").json())
    assert_listings_answer(http)


def test_runner_refuses_it_over_grpc_too(stack: Stack):
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports['runner']}") as channel:
        runner = runner_pb2_grpc.RunnerStub(channel)
        for call, message in [(runner.LoadModel, runner_pb2.LoadModelRequest(model="ai/tiny", keep_alive="1e300")),
                              (runner.Configure, runner_pb2.ModelSettings(model="ai/tiny", keep_alive="9999999999h"))]:
            with pytest.raises(grpc.RpcError) as refused:
                call(message, timeout=60)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "keep_alive" in refused.value.details() and "10 years" in refused.value.details()


# DMR JSON bodies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DMR_ROUTES)
@pytest.mark.parametrize("what", list(UNCARRIABLE))
def test_dmr_bodies_nothing_can_carry_are_400_on_a_kept_connection(http, path, what):
    reply = http.post(path, content=UNCARRIABLE[what], headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] in ("invalid_json", "invalid_value")
    assert_kept_open(reply)
    assert_listings_answer(http)


def test_a_lone_surrogate_key_is_named(http):
    reply = http.post("/models/create", content=UNCARRIABLE["a lone surrogate key"],
                      headers={"content-type": "application/json"})
    error = reply.json()["error"]
    assert error["param"] == "\\ud800" and "lone surrogate" in error["message"]


# registry references --------------------------------------------------------------------------------

@pytest.mark.parametrize("registry", BAD_REGISTRIES)
def test_bad_registry_hosts_are_400_on_every_route(http, olm, registry):
    name = f"{registry}/team/model"
    create = http.post("/models/create", json={"from": name})
    assert create.status_code == 400 and "invalid registry" in create.json()["error"]["message"], create.text
    remote = http.get(f"/models/{name}?remote=true")
    assert remote.status_code == 400 and "invalid registry" in remote.json()["error"]["message"], remote.text
    with pytest.raises(ollama.ResponseError) as refused:
        olm.pull(name)
    assert refused.value.status_code == 400 and "invalid registry" in refused.value.error
    assert_listings_answer(http)


def test_distribution_refuses_them_over_grpc_too(stack: Stack):
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports['distribution']}") as channel:
        distribution = distribution_pb2_grpc.DistributionStub(channel)
        for registry in BAD_REGISTRIES:
            with pytest.raises(grpc.RpcError) as refused:
                list(distribution.PullModel(distribution_pb2.PullModelRequest(reference=f"{registry}/x"), timeout=60))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


# Responses metadata -----------------------------------------------------------------------------------

def test_responses_metadata_is_bounded_as_openais(oai):
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model="ai/tiny", input="hi", max_output_tokens=1,
                             metadata={f"k{i}": "v" * 512 for i in range(150)})
    assert refused.value.param == "metadata" and "16" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model="ai/tiny", input="hi", max_output_tokens=1, metadata={"k": "v" * 100_000})
    assert refused.value.param == "metadata" and "512" in refused.value.message
    metadata = {f"k{i}": "v" * 512 for i in range(16)}
    stored = oai.responses.create(model="ai/tiny", input="hi", max_output_tokens=1, metadata=metadata)
    assert oai.responses.retrieve(stored.id).metadata == metadata


# repeat_penalty --------------------------------------------------------------------------------------

def test_repeat_penalty_past_the_runners_range_is_named_by_the_gateway(oai, olm):
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model="ai/tiny", messages=HI, max_tokens=1, extra_body={"repeat_penalty": 50})
    assert refused.value.param == "repeat_penalty"
    with pytest.raises(ollama.ResponseError) as refused:
        olm.chat(model="tiny", messages=HI, options={"num_predict": 1, "repeat_penalty": 50})
    assert refused.value.status_code == 400 and refused.value.error.startswith("options.repeat_penalty")
    answer = oai.chat.completions.create(model="ai/tiny", messages=HI, max_tokens=1, extra_body={"repeat_penalty": 10})
    assert answer.choices[0].finish_reason in ("stop", "length")


# a client that leaves a pull ------------------------------------------------------------------------

class SilentRegistry:
    """Plain HTTP that answers `GET /v2/` and then never answers again: a registry slow to send its
    manifest. Counts the requests it is holding (their connections open)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.holding = threading.Semaphore(0)
        self.held = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = conn.recv(4096)
            if not head.startswith(b"GET ") and not head.startswith(b"HEAD "):
                return  # a TLS hello: closed, so the client falls back to plain HTTP
            if head.split(b" ", 2)[1] in (b"/v2/", b"/v2"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                return
            with self.lock:
                self.held += 1
            self.holding.release()
            while conn.recv(4096):
                pass
        with self.lock:
            self.held -= 1

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize(("path", "field"), [("/models/create", "from"), ("/api/pull", "model")])
def test_a_client_leaving_before_the_first_progress_line_cancels_the_pull(stack: Stack, path: str, field: str):
    """Before the fix /models/create kept the Distribution waiting on the registry for a pull nobody read."""
    registry = SilentRegistry()
    try:
        body = json.dumps({field: f"{registry.address}/ai/slow"}).encode()
        client = socket.create_connection(("127.0.0.1", int(stack.url.rsplit(":", 1)[1])))
        client.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert registry.holding.acquire(timeout=60), "the pull never asked the registry for its manifest"
        client.close()  # the client gives up before any progress line
        deadline = time.monotonic() + 50  # the Distribution's own read timeout is 60 s
        while registry.held and time.monotonic() < deadline:
            time.sleep(0.1)
        assert registry.held == 0, "the Distribution still waits on the registry for a pull nobody reads"
    finally:
        registry.close()
