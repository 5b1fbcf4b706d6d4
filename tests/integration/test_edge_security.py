"""Issue 16's attacks on the edge, each a regression test, against the deployment run for real (the
compose environment as local processes, the real Envoy with envoy.yaml in front: see
test_deploy_stack.py), once without an API key (compose's default) and once with one.

A web page can send text/plain and form POSTs cross-site with no preflight, and after DNS rebinding it
is same-origin with whatever its name now resolves to; a client on the network can speak gRPC to
whatever port it reaches.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import pytest

from modelrunner.v1 import runner_pb2, runner_pb2_grpc, store_pb2, store_pb2_grpc
from tests.integration.test_deploy_stack import (
    BACKENDS,
    TRANSCODE,
    Edge,
    LocalCompose,
    running_edge,
    start_order,
    wait_serving,
)

KEY = "edge-key-" + secrets.token_hex(12)
WRONG_KEY = "edge-key-" + secrets.token_hex(12)  # a near miss is a secret too: never logged either
SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded")
ATTACKS = {
    "/models/create": {"from": "ai/tiny"},
    "/models/package": {"gguf_path": "/etc/hostname", "license_path": "/etc/shadow", "name": "ai/stolen:1"},
    "/engines/_configure": {"model": "ai/tiny", "context-size": 4096},
    "/v1/chat/completions": {"model": "ai/tiny", "messages": [{"role": "user", "content": "hi"}]},
}
FOREIGN_ORIGIN = "http://evil.example"


@dataclass
class Secured:
    stack: LocalCompose
    edge: Edge
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),) if self.key else ()

    def untouched(self) -> None:
        """Nothing the attacks ask for happened: no model, no setting, nothing loaded."""
        with grpc.insecure_channel(self.stack.address("store", 12435)) as channel:
            assert not store_pb2_grpc.StoreStub(channel).ListModels(store_pb2.ListModelsRequest(), timeout=10).models
        with grpc.insecure_channel(self.stack.address("runner", 12437)) as channel:
            runner = runner_pb2_grpc.RunnerStub(channel)
            assert not runner.ListConfigurations(runner_pb2.ListConfigurationsRequest(), timeout=10).settings
            assert not runner.ListRunning(runner_pb2.ListRunningRequest(), timeout=10).runners


@pytest.fixture(scope="module", params=["no key", "key"])
def secured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """The compose stack (no model in it) behind the real Envoy; with the param "key", the gateway is
    given MODELRUNNER_API_KEY as compose would. Every process logs at debug and writes its spans."""
    key = KEY if request.param == "key" else ""
    stack = LocalCompose(tmp_path_factory.mktemp("compose"))
    for name in BACKENDS:
        environment = stack.services[name]["environment"]
        environment.update(MODELRUNNER_LOG_LEVEL="debug", MODELRUNNER_TRACE_FILE="/tmp/spans.jsonl")
        Path(stack.path(name, "/tmp")).mkdir(parents=True)
    stack.services["gateway"]["environment"]["MODELRUNNER_API_KEY"] = key
    try:
        for name in start_order(stack.services):
            process = stack.start(name)
            wait_serving(process, process.env["MODELRUNNER_LISTEN"])
        with running_edge(stack, tmp_path_factory.mktemp("edge")) as edge:
            yield Secured(stack, edge, key)
    finally:
        stack.stop()


def gateway_url(secured: Secured) -> str:
    return f"http://{secured.stack.processes['gateway'].env['MODELRUNNER_HTTP_LISTEN']}"


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
@pytest.mark.parametrize("path", sorted(ATTACKS))
def test_simple_posts_are_refused_and_do_nothing(secured: Secured, path: str, content_type: str) -> None:
    body = json.dumps(ATTACKS[path])
    for base, headers in ((secured.edge.url, {}), (gateway_url(secured), {}), (secured.edge.url, TRANSCODE)):
        sent = {**headers, **secured.auth, "content-type": content_type}
        reply = httpx.post(f"{base}{path}", content=body, headers=sent, timeout=30)
        assert reply.status_code == 415, (base, headers, reply.text)
        assert "Content-Type: application/json" in reply.text
        if secured.key:  # a page has no key: refused before its body is looked at
            anonymous = httpx.post(f"{base}{path}", content=body, headers={**headers, "content-type": content_type},
                                   timeout=30)
            assert anonymous.status_code == 401, anonymous.text
    secured.untouched()


def test_a_foreign_origin_is_refused(secured: Secured) -> None:
    origin = {"origin": FOREIGN_ORIGIN, **secured.auth}
    chat = ATTACKS["/v1/chat/completions"]
    for reply in (
        httpx.post(f"{secured.edge.url}/v1/chat/completions", json=chat, headers=origin, timeout=30),
        httpx.get(f"{secured.edge.url}/models", headers=origin, timeout=30),
        httpx.get(f"{secured.edge.url}/models", headers={**origin, **TRANSCODE}, timeout=30),
        httpx.post(f"{secured.edge.url}/models/create", json=ATTACKS["/models/create"], headers={**origin, **TRANSCODE},
                   timeout=30),
        httpx.options(f"{secured.edge.url}/v1/chat/completions", timeout=30,
                      headers={"origin": FOREIGN_ORIGIN, "access-control-request-method": "POST"}),
    ):
        assert reply.status_code == 403, reply.text
        assert "MODELRUNNER_ORIGINS" in reply.text and "access-control-allow-origin" not in reply.headers
    secured.untouched()
    # The stack's own page (same host and port) and clients that send no Origin are served.
    host = secured.edge.url.removeprefix("http://")
    own = httpx.get(f"{secured.edge.url}/models", headers={"origin": f"http://{host}", **secured.auth}, timeout=30)
    assert own.status_code == 200, own.text


def test_a_rebinding_host_is_refused(secured: Secured) -> None:
    """compose answers only local names (MODELRUNNER_ALLOWED_HOSTS=localhost): a page whose name was
    rebound to 127.0.0.1 gets 403 on the REST routes and the transcoded ones alike."""
    port = secured.edge.url.rpartition(":")[2]
    rebound = {"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}", **secured.auth}
    for reply in (
        httpx.get(f"{secured.edge.url}/models", headers=rebound, timeout=30),
        httpx.get(f"{secured.edge.url}/models", headers={**rebound, **TRANSCODE}, timeout=30),
        httpx.post(f"{secured.edge.url}/v1/chat/completions", json=ATTACKS["/v1/chat/completions"], headers=rebound,
                   timeout=30),
        httpx.delete(f"{secured.edge.url}/models/purge", headers={**rebound, **TRANSCODE}, timeout=30),
    ):
        assert reply.status_code == 403, reply.text
        assert "MODELRUNNER_ALLOWED_HOSTS" in reply.text
    secured.untouched()
    local = httpx.get(f"{secured.edge.url}/models", headers={"host": f"localhost:{port}", **secured.auth}, timeout=30)
    assert local.status_code == 200, local.text


def raw_get(base: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, str]:
    """GET with exactly these header lines, a repeated one included (httpx would merge them into one)."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        reply = connection.getresponse()
        return reply.status, reply.read().decode(errors="replace")
    finally:
        connection.close()


def test_a_second_host_or_origin_is_refused(secured: Secured) -> None:
    """RFC 9112: a request with two Host fields is a 400; so is one with two Origins. With one allowed
    and one foreign value, each check would judge a different one: the gateway the last, or, behind
    Envoy (which joins them with a comma), the first. At the gateway and at the edge, on the REST routes
    and the transcoded ones; a request with one allowed Host (and its own Origin) is served."""
    for base, extra in ((gateway_url(secured), {}), (secured.edge.url, {}), (secured.edge.url, TRANSCODE)):
        local = f"localhost:{base.rpartition(':')[2]}"
        sent = [*extra.items(), *secured.auth.items()]
        for repeated in (
            [("Host", local), ("Host", "evil.example")],
            [("Host", "evil.example"), ("Host", local)],
            [("Host", local), ("Origin", f"http://{local}"), ("Origin", FOREIGN_ORIGIN)],
            [("Host", local), ("Origin", FOREIGN_ORIGIN), ("Origin", f"http://{local}")],
        ):
            status, text = raw_get(base, "/models", [*repeated, *sent])
            assert status == 400, (base, extra, repeated, text)
            assert f"more than one {repeated[-1][0]} header" in json.loads(text)["error"]["message"]
        for one in ([("Host", local)], [("Host", local), ("Origin", f"http://{local}")]):
            status, text = raw_get(base, "/models", [*one, *sent])
            assert status == 200, (base, extra, one, text)
    secured.untouched()


def test_raw_grpc_is_not_on_the_public_port(secured: Secured) -> None:
    with grpc.insecure_channel(secured.edge.url.removeprefix("http://")) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            store_pb2_grpc.StoreStub(channel).PurgeModels(store_pb2.PurgeModelsRequest(), metadata=secured.metadata,
                                                          timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, refused.value.details()
    assert "public port" in refused.value.details()


def _write_blob(channel: grpc.Channel, metadata) -> None:
    data = b"not a model"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    header = store_pb2.WriteBlobRequest(header=store_pb2.BlobHeader(digest=digest, size=len(data), offset=0))
    store_pb2_grpc.StoreStub(channel).WriteBlob(iter([header, store_pb2.WriteBlobRequest(data=data)]),
                                                metadata=metadata, timeout=10)


def test_raw_grpc_needs_the_key(secured: Secured) -> None:
    """The gRPC listener (loopback in the image) checks every call as the REST routes are checked."""
    with grpc.insecure_channel(secured.edge.grpc) as channel:
        store = store_pb2_grpc.StoreStub(channel)
        if secured.key:
            for call in (
                lambda md: store.PurgeModels(store_pb2.PurgeModelsRequest(), metadata=md, timeout=10),
                lambda md: _write_blob(channel, md),
                lambda md: store.ListModels(store_pb2.ListModelsRequest(), metadata=md, timeout=10),
            ):
                for metadata in ((), (("authorization", f"Bearer {WRONG_KEY}"),), (("x-api-key", WRONG_KEY),)):
                    with pytest.raises(grpc.RpcError) as refused:
                        call(metadata)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
            secured.untouched()
        assert not store.ListModels(store_pb2.ListModelsRequest(), metadata=secured.metadata, timeout=10).models
        assert store.PurgeModels(store_pb2.PurgeModelsRequest(), metadata=secured.metadata, timeout=10) is not None


def test_every_rest_door_needs_the_key(secured: Secured) -> None:
    """With a key: the gateway's routes, the transcoded ones and /metrics; /healthz stays open (probes)."""
    doors = [("GET", "/models", TRANSCODE), ("GET", "/engines/ps", TRANSCODE), ("DELETE", "/models/purge", TRANSCODE),
             ("GET", "/models", {}), ("GET", "/v1/models", {}), ("GET", "/metrics", {}), ("GET", "/engines/df", {})]
    for method, path, headers in doors:
        anonymous = httpx.request(method, f"{secured.edge.url}{path}", headers=headers, timeout=30)
        wrong = httpx.request(method, f"{secured.edge.url}{path}", headers={**headers, "x-api-key": WRONG_KEY}, timeout=30)
        allowed = httpx.request(method, f"{secured.edge.url}{path}", headers={**headers, **secured.auth}, timeout=30)
        assert allowed.status_code == 200, (method, path, allowed.text)
        if secured.key:
            assert anonymous.status_code == wrong.status_code == 401, (method, path, anonymous.text, wrong.text)
            assert WRONG_KEY not in wrong.text
        else:
            assert anonymous.status_code == 200, (method, path, anonymous.text)
    assert httpx.get(f"{secured.edge.url}/healthz", timeout=30).status_code == 200
    # Anthropic's clients send the key as x-api-key.
    assert httpx.get(f"{secured.edge.url}/models", headers={**TRANSCODE, "x-api-key": KEY}, timeout=30).status_code == 200


def test_no_log_or_span_holds_a_key(secured: Secured) -> None:
    """Last in the module: after every request above (right keys, wrong keys), at debug level, no log
    line or span of any process, Envoy's access log included, holds either key."""
    files = [p for p in secured.stack.tmp.rglob("*") if p.is_file() and p.suffix in (".log", ".jsonl")]
    files.append(secured.edge.log)
    assert any(p.name == "spans.jsonl" for p in files), files
    for path in files:
        text = path.read_text(errors="replace")
        assert KEY not in text and WRONG_KEY not in text, path
