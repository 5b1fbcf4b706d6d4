"""Values past what the stack can hold are 400s (INVALID_ARGUMENT at the services) that name the field,
never 500s: a keep_alive beyond 10 years or of 400 digits, DMR bodies json.loads or protobuf cannot take,
registry hosts no URL can reach, unbounded Responses metadata, a repeat_penalty past the Runner's range."""

from __future__ import annotations

import re

import grpc
import pytest

from modelrunner.common.errors import ServiceError
from modelrunner.common.names import InvalidReference, parse_reference
from modelrunner.distribution.registry import RegistryClient, RegistryOptions
from modelrunner.gateway.ollama_convert import ps_entry, rfc3339
from modelrunner.gateway.ollama_models import keep_alive_text
from modelrunner.common.keep_alive import MAX_KEEP_ALIVE_S, parse_keep_alive
from modelrunner.runner.model_settings import ModelConfig
from modelrunner.runner.validation import check_model
from modelrunner.v1 import runner_pb2
from tests.support.gateway_fakes import gateway_client

CHAT = {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}]}
OLLAMA_CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False}
HUGE_INT = "9" * 400
URL_LESS_HOSTS = ["localhost:65536", "localhost:0", "999.999.999.999:5000", "01.2.3.4:5000", "xn--zz:5000",
                  "[1::2::3]:5000"]  # httpx cannot build (or connect to) their URL


@pytest.fixture
async def gw():
    async with gateway_client() as pair:
        yield pair


async def post_raw(client, path: str, raw: bytes):
    return await client.post(path, content=raw, headers={"content-type": "application/json"})


# keep_alive ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1e300", "1e18", "9999999999h", str(MAX_KEEP_ALIVE_S + 1)])
def test_runner_refuses_a_keep_alive_past_ten_years(text):
    with pytest.raises(ValueError, match="10 years"):
        parse_keep_alive(text)
    with pytest.raises(ValueError, match="10 years"):
        ModelConfig(keep_alive=text).validate()  # what /engines/_configure stores
    with pytest.raises(ServiceError) as refused:
        check_model("ai/tiny", text)  # every Generate, Embed and LoadModel
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and refused.value.message.startswith("keep_alive:")


@pytest.mark.parametrize(("text", "seconds"), [(str(MAX_KEEP_ALIVE_S), MAX_KEEP_ALIVE_S), ("-1", None),
                                               ("-1e300", None), ("-9999999999h", None)])
def test_runner_keeps_ten_years_and_any_negative_means_forever(text, seconds):
    assert parse_keep_alive(text) == seconds


@pytest.mark.parametrize("value", [int(HUGE_INT), "9999999999h", 1e18, 1e300, MAX_KEEP_ALIVE_S + 1])
def test_ollama_keep_alive_past_ten_years_is_refused(value):
    with pytest.raises(ValueError, match="10 years"):
        keep_alive_text(value)


@pytest.mark.parametrize(("value", "expected"), [(MAX_KEEP_ALIVE_S, str(MAX_KEEP_ALIVE_S)), (-int(HUGE_INT), "-1"),
                                                 ("-9999999999h", "-1")])
def test_ollama_keep_alive_bound_and_forever(value, expected):
    assert keep_alive_text(value) == expected


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings"])
async def test_ollama_keep_alive_of_400_digits_is_a_400_naming_it(gw, path):
    client, fakes = gw
    body = {"/api/chat": '"messages": [{"role": "user", "content": "hi"}]', "/api/generate": '"prompt": "hi"',
            "/api/embed": '"input": "hi"', "/api/embeddings": '"prompt": "hi"'}[path]
    before = len(fakes.runner.requests)
    reply = await post_raw(client, path, f'{{"model": "tiny", "stream": false, {body}, "keep_alive": {HUGE_INT}}}'.encode())
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"].startswith("keep_alive:") and "10 years" in reply.json()["error"]
    assert len(fakes.runner.requests) == before


@pytest.mark.parametrize("unix", [1e300, 1e18, float("inf"), 10**30])
def test_far_times_are_clamped_not_a_500(unix):
    assert rfc3339(unix) == "9999-12-31T23:59:59Z"
    assert ps_entry(runner_pb2.RunnerInfo(model_name="docker.io/ai/tiny:latest", expires_at=float(unix)), None)[
        "expires_at"] == "9999-12-31T23:59:59Z"


@pytest.mark.parametrize("unix", [float("nan"), float("-inf"), -1e300])
def test_impossible_times_are_the_epoch(unix):
    assert rfc3339(unix) == "1970-01-01T00:00:00Z"


def test_ordinary_times_are_unchanged():
    assert rfc3339(1700000000) == "2023-11-14T22:13:20Z"


# DMR JSON bodies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/models/create", "/models/package", "/engines/_configure", "/engines/unload"])
@pytest.mark.parametrize(("raw", "needle", "param"), [
    (b'{"from": "ai/x", "model": "ai/x", "name": "h\xff\xfe"}', "not UTF-8", None),
    (b'{"from": "ai/x", "model": "ai/x", "context-size": ' + b"9" * 5000 + b"}", "5000 digits", None),
    (b'{"from": "ai/x", "model": "ai/x", "\\ud800": 1}', "lone surrogate", "\\ud800"),
    (b'{"from": "ai/x", "model": "ai/x", "x": "\\udfff"}', "lone surrogate", "x"),
    (b'{"from": "ai/x", "model": "ai/x", "context-size": NaN}', "finite number", "context-size"),
])
async def test_dmr_bodies_nothing_can_carry_are_400(gw, path, raw, needle, param):
    client, _ = gw
    reply = await post_raw(client, path, raw)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert needle in error["message"] and error["param"] == param


# registry references --------------------------------------------------------------------------------

@pytest.mark.parametrize("host", [*URL_LESS_HOSTS, "a.xn--abc.com"])
def test_reference_refuses_a_registry_no_url_can_reach(host):
    with pytest.raises(InvalidReference, match=re.escape(f"invalid registry '{host}'")):
        parse_reference(f"{host}/team/model")


@pytest.mark.parametrize("host", ["localhost:1", "localhost:65535", "127.0.0.1:5000", "[::1]:5000",
                                  "xn--bcher-kva.example:443", "1.2.3", "registry.example"])
def test_reference_keeps_registries_that_are_fine(host):
    assert parse_reference(f"{host}/team/model").registry == host


@pytest.mark.parametrize("host", URL_LESS_HOSTS)
def test_registry_client_backstop_is_invalid_argument(host):
    """A caller that skips parse_reference still gets INVALID_ARGUMENT, not httpx's or idna's error."""
    with pytest.raises(ServiceError) as refused:
        RegistryClient(host, credentials=None, scopes=[], options=RegistryOptions())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and host in refused.value.message


@pytest.mark.parametrize("host", ["localhost:99999", "999.999.999.999:5000", "xn--zz:5000"])
async def test_ollama_pull_of_a_bad_registry_is_a_400(gw, host):
    client, _ = gw
    reply = await client.post("/api/pull", json={"model": f"{host}/x", "stream": False})
    assert reply.status_code == 400 and "invalid registry" in reply.json()["error"], reply.text


# Responses metadata -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("metadata", "needle"), [
    ({f"k{i}": "v" for i in range(17)}, "at most 16 key-value pairs"),
    ({"k" * 65: "v"}, "keys are at most 64 characters"),
    ({"k": "v" * 513}, "values are at most 512 characters"),
])
async def test_responses_metadata_past_openais_limits_is_a_400(gw, metadata, needle):
    client, fakes = gw
    before = len(fakes.runner.requests)
    reply = await client.post("/v1/responses", json={"model": "ai/tiny", "input": "hi", "metadata": metadata})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == "metadata" and needle in error["message"]
    assert len(fakes.runner.requests) == before


async def test_responses_metadata_at_openais_limits_is_kept(gw):
    client, _ = gw
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    reply = await client.post("/v1/responses", json={"model": "ai/tiny", "input": "hi", "metadata": metadata})
    assert reply.status_code == 200, reply.text
    assert reply.json()["metadata"] == metadata


# repeat_penalty --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 10.5, 100])
async def test_repeat_penalty_past_the_runners_range_is_refused_at_the_gateway(gw, value):
    client, fakes = gw
    before = len(fakes.runner.requests)
    openai = await client.post("/v1/chat/completions", json={**CHAT, "repeat_penalty": value})
    assert openai.status_code == 400 and openai.json()["error"]["param"] == "repeat_penalty", openai.text
    ollama = await client.post("/api/chat", json={**OLLAMA_CHAT, "options": {"repeat_penalty": value}})
    assert ollama.status_code == 400 and ollama.json()["error"].startswith("options.repeat_penalty"), ollama.text
    assert len(fakes.runner.requests) == before


async def test_repeat_penalty_of_ten_reaches_the_runner(gw):
    client, fakes = gw
    assert (await client.post("/v1/chat/completions", json={**CHAT, "repeat_penalty": 10})).status_code == 200
    assert fakes.runner.requests[-1].sampling.repeat_penalty == 10
