"""deploy/envoy: the descriptor set compiles from protos/, and the real Envoy accepts envoy.yaml with it
(`envoy --mode validate`; only the descriptor path is changed from the image's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from tests.support.deploy_scripts import build_descriptors, render

ROOT = Path(__file__).resolve().parents[2]
ENVOY = Path(sys.executable).parent / "envoy"
AUTHZ = "envoy.filters.http.ext_authz"


@pytest.fixture(scope="module")
def descriptors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_descriptors.build(tmp_path_factory.mktemp("envoy") / "modelrunner.pb")


def validate(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60)


def test_descriptor_set_holds_every_service_and_its_imports(descriptors: Path) -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes())
    names = {f.name for f in files.file}
    assert {"google/api/annotations.proto", "google/api/http.proto", "modelrunner/v1/store.proto"} <= names
    services = {f"{f.package}.{s.name}" for f in files.file for s in f.service}
    assert {"modelrunner.v1.Store", "modelrunner.v1.Distribution", "modelrunner.v1.Runner"} <= services


def test_only_response_bodies_envoy_cannot_serve_are_dropped(descriptors: Path) -> None:
    """Every annotation survives; only non-HttpBody `response_body`s are cleared (Envoy rejects them)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes())
    rules = {
        m.name: m.options.Extensions[annotations_pb2.http]
        for f in files.file
        for s in f.service
        for m in s.method
        if m.options.HasExtension(annotations_pb2.http)
    }
    assert rules["ListModels"].get == "/models" and rules["GetModel"].get == "/models/{name=**}"
    assert rules["PullModel"].post == "/models/create"
    assert all(not rule.response_body for rule in rules.values())


def test_envoy_validates_the_edge(descriptors: Path, tmp_path: Path) -> None:
    config = render.render(render.load(), descriptors=descriptors, upstreams={})
    done = validate(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "OK" in done.stdout + done.stderr


def test_envoy_rejects_a_broken_edge(descriptors: Path, tmp_path: Path) -> None:
    """The validation is real: a route to a cluster that does not exist fails it."""
    config = render.render(render.load(), descriptors=descriptors, upstreams={})
    render.edge_routes(config)[-1]["route"]["cluster"] = "nowhere"
    assert validate(config, tmp_path).returncode != 0


def test_edge_routes(descriptors: Path) -> None:
    """Streams have no total deadline; gRPC goes to the service its path names (on the `grpc` listener);
    the rest to the gateway."""
    routes = render.edge_routes(render.load())
    grpc = {r["match"]["prefix"]: r["route"]["cluster"] for r in render.routes(render.load(), "grpc") if "grpc" in r["match"]}
    assert grpc == {
        "/modelrunner.v1.Store/": "store",
        "/modelrunner.v1.Distribution/": "distribution",
        "/modelrunner.v1.Runner/": "runner",
    }
    transcoded = next(r for r in routes if r["match"].get("headers"))
    assert transcoded["match"]["headers"] == [{"name": "x-modelrunner-transcode", "present_match": True}]
    assert render.TRANSCODER in transcoded["typed_per_filter_config"]
    assert transcoded["route"]["cluster"] == "edge_grpc"
    streams = [r for r in routes if "safe_regex" in r["match"] and not r["match"].get("headers")]
    assert all(r["route"]["timeout"] == "0s" and r["route"]["cluster"] == "gateway" for r in streams)
    pattern = re.compile("|".join(r["match"]["safe_regex"]["regex"] for r in streams))
    for path in ("/v1/chat/completions", "/engines/v1/completions", "/engines/llama.cpp/v1/chat/completions",
                 "/models/create", "/models/ai/gemma3:latest/push", "/models/blobs/sha256:" + "a" * 64,
                 "/v1/responses", "/responses", "/v1/messages", "/anthropic/v1/messages", "/api/chat",
                 "/api/generate", "/api/pull", "/api/push", "/engines/requests", "/engines/requests/stream"):
        assert pattern.search(path), path
    for path in ("/v1/models", "/v1/embeddings", "/models", "/models/ai/gemma3", "/v1/messages/count_tokens",
                 "/v1/responses/resp_1", "/api/tags", "/api/embed"):
        assert not pattern.search(path), path
    assert routes[-1]["match"] == {"prefix": "/"} and routes[-1]["route"]["timeout"] != "0s"


def _filters(config: dict[str, Any], listener: str) -> list[str]:
    (item,) = [i for i in config["static_resources"]["listeners"] if i["name"] == listener]
    return [f["name"] for f in item["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]]


def _authz_off(route: dict[str, Any]) -> bool:
    return route.get("typed_per_filter_config", {}).get(AUTHZ, {}).get("disabled", False)


def test_every_door_is_checked() -> None:
    """A route of either listener reaches a service only with ext_authz on (the gateway's /_authz);
    routes without it go to the gateway, which checks itself, or answer by themselves."""
    config = render.load()
    for listener in ("edge", "grpc"):
        names = _filters(config, listener)
        assert AUTHZ in names and names[-1] == "envoy.filters.http.router", names
        if render.TRANSCODER in names:  # the check sees the client's own Content-Type
            assert names.index(AUTHZ) < names.index(render.TRANSCODER)
        for route in render.routes(config, listener):
            target = route.get("route", {}).get("cluster")
            if _authz_off(route):
                assert target in ("gateway", None), route
            else:
                assert target in ("store", "distribution", "runner", "edge_grpc"), route
    authz = next(f for f in render.http_managers(config)[0]["http_filters"] if f["name"] == AUTHZ)["typed_config"]
    assert authz["http_service"]["path_prefix"] == "/_authz" and authz["failure_mode_allow"] is False
    assert authz["http_service"]["server_uri"]["cluster"] == "gateway"


def test_raw_grpc_is_not_on_the_public_listener() -> None:
    config = render.load()
    (refusal,) = [r for r in render.edge_routes(config) if "grpc" in r["match"]]
    assert refusal["match"]["prefix"] == "/" and refusal["direct_response"]["status"] == 404
    assert render.edge_routes(config).index(refusal) == 0
    addresses = {item["name"]: item["address"]["socket_address"] for item in config["static_resources"]["listeners"]}
    assert addresses["grpc"]["address"] == "127.0.0.1"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_render_moves_the_grpc_listener_and_the_edges_calls_to_it(descriptors: Path) -> None:
    config = render.render(render.load(), descriptors=descriptors, upstreams={}, grpc_listen="0.0.0.0:8081")
    listener = next(i for i in config["static_resources"]["listeners"] if i["name"] == "grpc")
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8081}
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "edge_grpc")
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "127.0.0.1", "port_value": 8081}


def test_local_render_points_every_upstream_at_this_machine(descriptors: Path) -> None:
    config = render.render(
        render.load(), descriptors=descriptors, upstreams=render.LOCAL_UPSTREAMS, listen="127.0.0.1:8080"
    )
    for cluster in config["static_resources"]["clusters"]:
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        assert address["socket_address"]["address"] == "127.0.0.1", cluster["name"]
    with pytest.raises(ValueError, match="no cluster 'nope'"):
        render.render(render.load(), descriptors=descriptors, upstreams={"nope": "127.0.0.1:1"})
