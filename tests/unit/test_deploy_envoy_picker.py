"""deploy/envoy/render.py --picker --pool: the inference routes go through an endpoint picker (ext_proc)
to the pool endpoint it names, as the EPP's standalone Envoy does; everything else stays as it was.
The real Envoy accepts the rendered file."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy_scripts import build_descriptors, render

ENVOY = Path(sys.executable).parent / "envoy"
picker = render.picker
POOL = ["10.0.0.5:12434", "10.0.0.6:12434"]
INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat", "/api/generate",
                   "/engines/v1/chat/completions", "/engines/llama.cpp/v1/completions")
OTHER_PATHS = ("/v1/models", "/v1/responses", "/v1/messages", "/api/embed", "/api/tags", "/models/create",
               "/v1/chat/completions/x", "/x/v1/chat/completions", "/healthz", "/metrics")


@pytest.fixture(scope="module")
def descriptors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_descriptors.build(tmp_path_factory.mktemp("envoy") / "modelrunner.pb")


def rendered(descriptors: Path, **options: Any) -> dict[str, Any]:
    return render.render(render.load(), descriptors=descriptors, upstreams={}, **options)


def with_picker(descriptors: Path, address: str = "127.0.0.1:9002", **options: Any) -> dict[str, Any]:
    return rendered(descriptors, endpoint_picker=address, pool=POOL, **options)


def edge_manager(config: dict[str, Any]) -> dict[str, Any]:
    return render.http_managers(config)[0]


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


@pytest.mark.parametrize("options", [{}, {"picker_tls": True}, {"address": "epp.inference:9002"}])
def test_envoy_validates_the_edge_with_a_picker(descriptors: Path, tmp_path: Path, options: dict) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(with_picker(descriptors, **options)))
    done = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_picker_sees_each_inference_request_as_the_epp_asks_and_fails_closed(descriptors: Path) -> None:
    names = [f["name"] for f in edge_manager(with_picker(descriptors))["http_filters"]]
    # The client's own destination header is gone before the picker runs; the router comes last.
    assert names.index("envoy.filters.http.ext_authz") < names.index(picker.HEADER_MUTATION) < names.index(picker.EXT_PROC)
    assert names.index(picker.EXT_PROC) < names.index(render.TRANSCODER) < names.index("envoy.filters.http.router")
    filters = {f["name"]: f["typed_config"] for f in edge_manager(with_picker(descriptors))["http_filters"]}
    assert filters[picker.HEADER_MUTATION]["mutations"] == {"request_mutations": [{"remove": picker.DESTINATION}]}
    ext_proc = filters[picker.EXT_PROC]
    assert ext_proc["grpc_service"]["envoy_grpc"]["cluster_name"] == picker.PICKER_CLUSTER
    assert ext_proc["failure_mode_allow"] is False and ext_proc["status_on_error"] == {"code": "ServiceUnavailable"}
    assert ext_proc["processing_mode"] == {  # the EPP's standalone config
        "request_header_mode": "SEND", "response_header_mode": "SEND",
        "request_body_mode": "FULL_DUPLEX_STREAMED", "response_body_mode": "FULL_DUPLEX_STREAMED",
        "request_trailer_mode": "SEND", "response_trailer_mode": "SEND",
    }


def test_inference_routes_go_to_the_endpoint_the_picker_names_within_the_pool(descriptors: Path) -> None:
    routes = render.edge_routes(with_picker(descriptors))
    assert "grpc" in routes[0]["match"]  # raw gRPC is still refused first
    chosen, unchosen = routes[1], routes[2]
    assert chosen["route"] == {"cluster": picker.POOL_CLUSTER, "timeout": "0s", "idle_timeout": "600s"}
    assert unchosen["direct_response"]["status"] == 503 and "route" not in unchosen
    for route in (chosen, unchosen):
        assert picker.EXT_PROC not in route["typed_per_filter_config"]  # the picker runs here
        assert route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
        inference = re.compile(route["match"]["safe_regex"]["regex"])
        assert all(inference.search(path) for path in INFERENCE_PATHS)
        assert not any(inference.search(path) for path in OTHER_PATHS)
    (header,) = chosen["match"]["headers"]
    assert header["name"] == picker.DESTINATION and "headers" not in unchosen["match"]
    endpoint = re.compile(header["string_match"]["safe_regex"]["regex"])
    assert all(endpoint.search(item) for item in POOL)
    for outside in ("10.0.0.7:12434", "10.0.0.5:1243", "10.0.0.5:124345", "110.0.0.5:12434", "10.0.0.5:12434,10.0.0.9:1"):
        assert not endpoint.search(outside), outside


def test_every_other_route_is_as_before_with_the_picker_off(descriptors: Path) -> None:
    before = render.edge_routes(rendered(descriptors))
    after = copy.deepcopy(render.edge_routes(with_picker(descriptors)))
    del after[1:3]
    for route in after:
        off = route["typed_per_filter_config"].pop(picker.EXT_PROC)
        assert off["disabled"] is True and off["@type"].endswith("ext_proc.v3.ExtProcPerRoute")
        if not route["typed_per_filter_config"]:
            del route["typed_per_filter_config"]
    assert after == before
    listeners = lambda config: [i for i in config["static_resources"]["listeners"] if i["name"] != "edge"]  # noqa: E731
    assert listeners(with_picker(descriptors)) == listeners(rendered(descriptors))


def test_the_pool_is_an_original_destination_cluster_on_the_pickers_header(descriptors: Path) -> None:
    config = with_picker(descriptors)
    pool = clusters(config)[picker.POOL_CLUSTER]
    assert pool["type"] == "ORIGINAL_DST" and pool["lb_policy"] == "CLUSTER_PROVIDED"
    assert pool["original_dst_lb_config"] == {"use_http_header": True, "http_header_name": "x-gateway-destination-endpoint"}
    before = clusters(rendered(descriptors))
    assert {name: c for name, c in clusters(config).items() if name in before} == before


@pytest.mark.parametrize(("address", "kind"), [("127.0.0.1:9002", "STATIC"), ("epp.inference:9002", "STRICT_DNS")])
def test_the_picker_is_a_grpc_cluster_health_checked_as_the_epp_serves(descriptors: Path, address: str, kind: str) -> None:
    cluster = clusters(with_picker(descriptors, address))[picker.PICKER_CLUSTER]
    assert cluster["type"] == kind
    assert "http2_protocol_options" in str(cluster["typed_extension_protocol_options"])
    socket = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert socket == {"address": address.rpartition(":")[0], "port_value": 9002}
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": "envoy.service.ext_proc.v3.ExternalProcessor"}
    assert "transport_socket" not in cluster
    tls = clusters(with_picker(descriptors, address, picker_tls=True))[picker.PICKER_CLUSTER]
    assert tls["transport_socket"]["name"] == "envoy.transport_sockets.tls"


def test_without_a_picker_nothing_changes(descriptors: Path) -> None:
    assert "ext_proc" not in yaml.safe_dump(rendered(descriptors))
    assert picker.POOL_CLUSTER not in clusters(rendered(descriptors))


@pytest.mark.parametrize(("pool", "message"), [
    (["gateway-1:12434"], "not ip:port"),
    (["10.0.0.5"], "not host:port"),
    ([], "no endpoint"),
])
def test_a_pool_is_addresses(descriptors: Path, pool: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rendered(descriptors, endpoint_picker="127.0.0.1:9002", pool=pool)


def test_ipv6_endpoints_are_written_as_the_picker_answers_them() -> None:
    assert picker.pool_endpoint("[::1]:8000") == "[::1]:8000"
    assert picker.pool_endpoint("[0:0::1]:8000") == "[::1]:8000"


def test_a_pool_needs_a_picker_and_the_command_line_says_so(descriptors: Path) -> None:
    with pytest.raises(ValueError, match="needs an endpoint picker"):
        rendered(descriptors, pool=POOL)
    for argv in (["--picker", "127.0.0.1:9002"], ["--pool", ",".join(POOL)]):
        with pytest.raises(SystemExit):
            render.main(["--descriptors", str(descriptors), "--listen", "127.0.0.1:8080", *argv])


def test_the_command_line_renders_the_picker(descriptors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    render.main(["--descriptors", str(descriptors), "--listen", "127.0.0.1:8080",
                 "--picker", "127.0.0.1:9002", "--pool", ",".join(POOL)])
    config = yaml.safe_load(capsys.readouterr().out)
    assert render.edge_routes(config)[1]["route"]["cluster"] == picker.POOL_CLUSTER
