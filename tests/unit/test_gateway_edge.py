"""The gateway as its own edge (issue 16): only JSON bodies on JSON routes, foreign Origins and Hosts
refused, the API key in either header, the /_authz checker Envoy asks; against the in-process fakes."""

from __future__ import annotations

import argparse
import json

import pytest
from fastapi import Request

from modelrunner.gateway import edge_policy
from modelrunner.gateway.middleware import accepts, declared_types
from modelrunner.gateway.settings import GATEWAY_SETTINGS, GatewayOptions
from tests.support.gateway_fakes import gateway_client

CHAT = {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}]}
KEY = "k3y-that-must-never-leak"
# What a web page may send cross-site without a CORS preflight, and what `curl -d` sends.
SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")
ATTACKED = {
    "/v1/chat/completions": CHAT,
    "/models/create": {"from": "ai/tiny"},
    "/engines/_configure": {"model": "ai/tiny", "context-size": 4096},
}


def options_of(**env: str) -> GatewayOptions:
    """GatewayOptions as the gateway's flags parse them, with these settings."""
    defaults = {s.dest: s.default for s in GATEWAY_SETTINGS}
    return GatewayOptions.from_args(argparse.Namespace(**{**defaults, "http_listen": "127.0.0.1:12434", **env}))


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
@pytest.mark.parametrize("path", sorted(ATTACKED))
async def test_json_routes_refuse_other_bodies_and_do_nothing(path: str, content_type: str) -> None:
    async with gateway_client() as (client, fakes):
        reply = await client.post(path, content=json.dumps(ATTACKED[path]), headers={"content-type": content_type})
        assert reply.status_code == 415, reply.text
        error = reply.json()["error"]
        assert "Content-Type: application/json" in error["message"] and error["code"] == "unsupported_media_type"
        assert not fakes.runner.requests and not hasattr(fakes.runner, "configured")


async def test_a_body_without_content_type_is_refused_and_none_without_body_passes() -> None:
    async with gateway_client() as (client, fakes):
        bare = await client.post("/v1/chat/completions", content=json.dumps(CHAT), headers={"content-type": ""})
        assert bare.status_code == 415, bare.text
        tagged = await client.post("/models/ai/tiny/tag?repo=team/model&tag=v2")  # no body: nothing to check
        assert tagged.status_code == 201 and fakes.store.tagged.repo == "team/model"


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
async def test_json_with_or_without_charset_is_served(content_type: str) -> None:
    async with gateway_client() as (client, _):
        reply = await client.post("/v1/chat/completions", content=json.dumps(CHAT), headers={"content-type": content_type})
        assert reply.status_code == 200, reply.text


async def test_an_upload_route_takes_exactly_the_types_it_declares() -> None:
    """...and streams it past the JSON body limit (the route bounds its uploads)."""
    async with gateway_client(GatewayOptions(max_body_bytes=1000)) as (client, _):
        app = client._transport.app  # noqa: SLF001 (the ASGI app under test)

        @app.put("/test-upload", openapi_extra=accepts("application/octet-stream"))
        async def upload(request: Request) -> dict:
            return {"size": len(await request.body())}

        raw = await client.put("/test-upload", content=b"\0" * 5000, headers={"content-type": "application/octet-stream"})
        assert raw.status_code == 200 and raw.json() == {"size": 5000}
        as_json = await client.put("/test-upload", json={"a": 1})
        assert as_json.status_code == 415 and "application/octet-stream" in as_json.json()["error"]["message"]
        big_json = await client.post("/v1/chat/completions", json={**CHAT, "pad": "x" * 5000})
        assert big_json.status_code == 413
        schema = (await client.get("/openapi.json")).json()["paths"]["/test-upload"]["put"]["requestBody"]
        assert list(schema["content"]) == ["application/octet-stream"]


def test_declared_types_default_to_json() -> None:
    assert declared_types(object()) == {"application/json"}
    route = type("Route", (), {"openapi_extra": accepts("application/octet-stream", "Text/CSV")})()
    assert declared_types(route) == {"application/octet-stream", "text/csv"}


# --- Origin --------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:3000", "http://127.0.0.1:8080"])
async def test_a_foreign_origin_is_refused(origin: str) -> None:
    async with gateway_client() as (client, fakes):
        headers = {"origin": origin, "host": "127.0.0.1:12434"}
        for reply in (
            await client.post("/v1/chat/completions", json=CHAT, headers=headers),
            await client.get("/models", headers=headers),
            await client.options("/v1/chat/completions", headers={**headers, "access-control-request-method": "POST"}),
        ):
            assert reply.status_code == 403, reply.text
            assert "MODELRUNNER_ORIGINS" in reply.json()["error"]["message"]
            assert "access-control-allow-origin" not in reply.headers
        assert not fakes.runner.requests


@pytest.mark.parametrize("host", ["127.0.0.1:12434", "localhost:12434", "[::1]:12434"])
async def test_the_stacks_own_page_and_clients_without_origin_pass(host: str) -> None:
    async with gateway_client() as (client, _):
        own = await client.post("/v1/chat/completions", json=CHAT, headers={"origin": f"http://{host}", "host": host})
        assert own.status_code == 200, own.text
        assert (await client.post("/v1/chat/completions", json=CHAT, headers={"host": host})).status_code == 200


async def test_configured_origins_get_cors_answers() -> None:
    options = GatewayOptions(origins=["http://app.example"])
    async with gateway_client(options) as (client, _):
        preflight = await client.options("/v1/chat/completions", headers={
            "origin": "http://app.example", "access-control-request-method": "POST"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        chat = await client.post("/v1/chat/completions", json=CHAT, headers={"origin": "http://app.example"})
        assert chat.status_code == 200 and chat.headers["access-control-allow-origin"] == "http://app.example"
        assert (await client.get("/models", headers={"origin": "http://other.example"})).status_code == 403
    async with gateway_client(GatewayOptions(origins=["*"])) as (client, _):
        assert (await client.get("/models", headers={"origin": "http://any.example"})).status_code == 200


# --- Host (DNS rebinding) ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:12434", "127.0.0.1.evil.example", "localhost.evil.example"])
async def test_a_rebinding_host_is_refused_when_bound_to_loopback(host: str) -> None:
    async with gateway_client(options_of()) as (client, fakes):
        reply = await client.post("/v1/chat/completions", json=CHAT, headers={"host": host})
        assert reply.status_code == 403 and "MODELRUNNER_ALLOWED_HOSTS" in reply.json()["error"]["message"]
        # Same-origin after rebinding: Origin and Host agree, both foreign.
        rebound = await client.get("/models", headers={"host": host, "origin": f"http://{host}"})
        assert rebound.status_code == 403
        assert not fakes.runner.requests


@pytest.mark.parametrize("host", ["localhost", "localhost:1", "127.0.0.1:12434", "[::1]:12434", "10.1.2.3:80",
                                  "app.localhost", "models.example:12434"])
async def test_local_names_ip_addresses_and_listed_hosts_pass(host: str) -> None:
    async with gateway_client(options_of(allowed_hosts="Models.Example:1")) as (client, _):
        reply = await client.get("/models", headers={"host": host})
        assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("host", ["localhost:12434,evil.example", "localhost:1 evil.example", "localhost:x",
                                  "127.0.0.1:80x"])
def test_a_host_whose_port_is_not_digits_is_refused(host: str) -> None:
    assert not edge_policy.host_allowed(host, frozenset())
    assert edge_policy.host_allowed(host.partition(":")[0], frozenset())


async def test_this_machines_name_passes() -> None:
    (name, *_) = sorted(edge_policy.machine_names())
    async with gateway_client(options_of()) as (client, _):
        assert (await client.get("/models", headers={"host": f"{name}:12434"})).status_code == 200


def test_the_host_check_is_on_when_bound_to_loopback_or_configured() -> None:
    assert options_of().allowed_hosts == []
    assert options_of(http_listen="[::1]:12434").allowed_hosts == []
    assert options_of(http_listen="0.0.0.0:12434").allowed_hosts is None
    assert options_of(http_listen="0.0.0.0:12434", allowed_hosts="a.example, b.example").allowed_hosts == [
        "a.example", "b.example"]
    assert options_of(allowed_hosts="*").allowed_hosts is None
    assert options_of(origins="http://a.example,http://b.example").origins == ["http://a.example", "http://b.example"]


async def test_any_host_when_the_check_is_off() -> None:
    async with gateway_client(options_of(http_listen="0.0.0.0:12434")) as (client, _):
        assert (await client.get("/models", headers={"host": "models.example.com"})).status_code == 200


# --- one Host, one Origin ------------------------------------------------------------------------


@pytest.mark.parametrize("repeated", [
    [("host", "localhost"), ("host", "evil.example")],
    [("host", "evil.example"), ("host", "localhost")],
    [("host", "localhost"), ("origin", "http://localhost"), ("origin", "http://evil.example")],
    [("host", "localhost"), ("origin", "http://evil.example"), ("origin", "http://localhost")],
    [("host", "localhost:12434,evil.example")],  # two Hosts as a proxy joins them (Envoy does)
    [("host", "localhost"), ("origin", "http://localhost,http://evil.example")],
])
@pytest.mark.parametrize("env", [{}, {"http_listen": "0.0.0.0:12434"}])  # with the Host check on, and off
async def test_a_second_host_or_origin_is_400(repeated: list[tuple[str, str]], env: dict[str, str]) -> None:
    async with gateway_client(options_of(**env)) as (client, fakes):
        reply = await client.post("/v1/chat/completions", json=CHAT, headers=repeated)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["code"] == "duplicate_header" and error["type"] == "invalid_request_error"
        assert f"more than one {repeated[-1][0].capitalize()} header" in error["message"]
        assert not fakes.runner.requests
        one = await client.post("/v1/chat/completions", json=CHAT, headers=[("host", "localhost"),
                                                                            ("origin", "http://localhost")])
        assert one.status_code == 200, one.text


# --- the API key and the checker Envoy asks ------------------------------------------------------


async def test_the_key_in_either_header_and_never_echoed() -> None:
    async with gateway_client(GatewayOptions(api_key=KEY)) as (client, _):
        assert (await client.get("/models", headers={"x-api-key": KEY})).status_code == 200
        assert (await client.get("/models", headers={"authorization": f"Bearer {KEY}"})).status_code == 200
        for headers in ({"x-api-key": KEY + "x"}, {"authorization": KEY}, {"authorization": f"Bearer {KEY[:-1]}"}):
            refused = await client.get("/models", headers=headers)
            assert refused.status_code == 401 and KEY[:8] not in refused.text
    assert KEY not in repr(GatewayOptions(api_key=KEY))


async def test_authz_answers_what_the_routes_would() -> None:
    async with gateway_client(options_of(api_key=KEY, allowed_hosts="gateway")) as (client, _):
        key = {"authorization": f"Bearer {KEY}"}
        assert (await client.post("/_authz/modelrunner.v1.Store/PurgeModels",
                                  headers={"content-type": "application/grpc"})).status_code == 401
        grpc_call = await client.post("/_authz/modelrunner.v1.Store/PurgeModels",
                                      headers={**key, "content-type": "application/grpc"})
        assert grpc_call.status_code == 200
        assert (await client.get("/_authz/models", headers=key)).status_code == 200
        assert (await client.delete("/_authz/models/purge", headers=key)).status_code == 200
        plain = await client.post("/_authz/models/package", headers={**key, "content-type": "text/plain"})
        assert plain.status_code == 415
        foreign = await client.get("/_authz/models", headers={**key, "origin": "http://evil.example"})
        assert foreign.status_code == 403
        rebound = await client.get("/_authz/models", headers={**key, "host": "evil.example:12434"})
        assert rebound.status_code == 403
        assert "/_authz/{path}" not in (await client.get("/openapi.json", headers=key)).json()["paths"]
