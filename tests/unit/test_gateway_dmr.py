"""Docker Model Runner routes: the transcoded route table and DMR's JSON on top, against fakes."""

from __future__ import annotations

import json

import pytest

from modelrunner.gateway.dmr_routes import SERVICES
from modelrunner.gateway.transcoding import routes_of
from tests.support.gateway_fakes import MODEL, TINY, gateway_client


@pytest.fixture
async def gw():
    async with gateway_client() as pair:
        yield pair


def test_route_table_comes_from_the_annotations():
    table = {(r.http_method, r.template): r for r in routes_of(SERVICES)}
    assert table[("GET", "/models")].response_body == "models"
    tag = table[("POST", "/models/{source=**}/tag")]
    assert tag.path == "/models/{source:path}/tag" and tag.variables == ("source",)
    assert table[("POST", "/models/create")].body == "*" and table[("POST", "/models/create")].server_streaming
    routes = routes_of(SERVICES)
    first_templated = next(i for i, r in enumerate(routes) if r.variables)
    assert all(r.literal for r in routes[:first_templated])  # /models/purge before /models/{name=**}


async def test_list_models_is_a_bare_array_with_numbers(gw):
    client, _ = gw
    data = (await client.get("/models")).json()
    assert isinstance(data, list) and data[0]["id"] == MODEL.id and data[0]["tags"] == list(MODEL.tags)
    assert data[0]["created"] == 1700000000 and isinstance(data[0]["created"], int)
    assert data[0]["config"]["context_size"] == 512 and data[0]["config"]["format"] == "gguf"


async def test_get_model_local_and_remote(gw):
    client, fakes = gw
    assert (await client.get("/models/ai/tiny")).json()["id"] == MODEL.id
    assert (await client.get("/models/ai/other")).status_code == 404
    remote = await client.get("/models/ai/other?remote=true")
    assert remote.status_code == 200 and fakes.distribution.remote.reference == "ai/other"


async def test_delete_actions_and_conflict(gw):
    client, _ = gw
    reply = await client.delete("/models/ai/tiny")
    assert reply.json() == [{"Untagged": TINY}, {"Deleted": MODEL.id}]
    conflict = await client.delete("/models/ai/multi")
    assert conflict.status_code == 409 and "force" in conflict.json()["error"]["message"]
    assert (await client.delete("/models/ai/multi?force=true")).status_code == 200
    bad = await client.delete("/models/ai/multi?force=maybe")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "force"


async def test_tag_is_201_from_query(gw):
    client, fakes = gw
    reply = await client.post("/models/ai/tiny/tag?repo=team/model&tag=v2")
    assert reply.status_code == 201 and reply.json()["tag"] == "docker.io/team/model:v2"
    assert (fakes.store.tagged.source, fakes.store.tagged.repo, fakes.store.tagged.tag) == ("ai/tiny", "team/model", "v2")


async def test_create_streams_progress_json_lines(gw):
    client, _ = gw
    reply = await client.post("/models/create", json={"from": "ai/tiny"}, headers={"Accept": "application/json"})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/json")
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert [line["type"] for line in lines] == ["progress"] * 3 + ["success"]
    assert lines[1]["layer"] == {"id": "sha256:" + "b" * 64, "size": 524288, "current": 262144}
    assert lines[1]["total"] == 524288 and lines[1]["mode"] == "pull"


async def test_create_of_absent_model_is_404_before_streaming(gw):
    client, _ = gw
    reply = await client.post("/models/create", json={"from": "ai/absent"})
    assert reply.status_code == 404 and "not found" in reply.json()["error"]["message"]


async def test_package_body_and_wrong_type(gw):
    client, fakes = gw
    gguf = {"digest": "sha256:" + "ab" * 32, "name": "x.gguf"}
    ok = await client.post("/models/package", json={"gguf": [gguf], "name": "ai/x", "context_size": 128})
    assert ok.status_code == 200 and fakes.store.packaged.context_size == 128
    assert fakes.store.packaged.gguf[0].digest == gguf["digest"] and fakes.store.packaged.gguf[0].name == "x.gguf"
    bad = await client.post("/models/package", json={"gguf": [gguf], "context_size": "big"})
    assert bad.status_code == 400 and "context_size" in bad.json()["error"]["message"]
    malformed = await client.post("/models/package", content=b"{nope", headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"


async def test_engines_routes(gw):
    client, fakes = gw
    ps = (await client.get("/engines/ps")).json()
    assert ps[0]["backend_name"] == "llama.cpp" and ps[0]["last_used"] == 1700000001
    assert (await client.post("/engines/unload", json={"models": ["a", "b"]})).json() == {"unloaded_runners": 2}
    assert (await client.get("/engines/df")).json() == {"models_disk_usage": 524288, "default_backend_disk_usage": 0}
    assert (await client.get("/engines/status")).json()["backends"][0]["name"] == "llama.cpp"
    configured = await client.post("/engines/_configure", json={"model": "ai/tiny", "context-size": 2048,
                                                                  "runtime-flags": ["--x"], "keep_alive": "1m"})
    assert configured.status_code == 202 and configured.json()["context-size"] == 2048
    assert fakes.runner.configured.context_size == 2048 and list(fakes.runner.configured.runtime_flags) == ["--x"]
    listed = (await client.get("/engines/_configure")).json()
    assert listed[0]["model"] == TINY and listed[0]["context-size"] == 2048


async def test_openapi_documents_every_route(gw):
    client, _ = gw
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in ("/v1/chat/completions", "/engines/v1/embeddings", "/models", "/models/{name}", "/models/{source}/tag",
                 "/models/create", "/engines/ps", "/engines/_configure", "/healthz", "/metrics"):
        assert path in paths, path
    assert "201" in paths["/models/{source}/tag"]["post"]["responses"]
    assert paths["/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "from" in paths["/models/create"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]


@pytest.mark.parametrize("field", ["gguf_path", "license_path", "chat_template_path"])
async def test_package_with_a_server_path_is_refused_by_name(gw, field):
    """A web page once made /etc/shadow a model blob: no packaging request may name a server file."""
    client, fakes = gw
    fakes.store.packaged = None
    reply = await client.post("/models/package", json={"name": "ai/x", field: "/etc/shadow"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == field
    assert "PUT /models/blobs/{digest}" in reply.json()["error"]["message"]
    assert fakes.store.packaged is None


async def test_blob_upload_needs_a_digest_and_a_length(gw):
    client, _ = gw
    bad = await client.put("/models/blobs/latest", content=b"GGUF", headers={"Content-Type": "application/octet-stream"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "digest"

    async def chunked():
        yield b"GGUF"

    unsized = await client.put("/models/blobs/sha256:" + "ab" * 32, content=chunked(),
                               headers={"Content-Type": "application/octet-stream"})
    assert unsized.status_code == 411 and "Content-Length" in unsized.json()["error"]["message"]
    assert unsized.json()["error"]["type"] == "invalid_request_error"  # the client's to fix, not server_error
