"""Renders deploy/envoy/envoy.yaml for an Envoy outside Docker: in front of services on this machine.

Only addresses and paths change (upstreams, listener and admin ports, the descriptor set); the routes,
filters and timeouts stay those of the edge that compose and Kubernetes run. `--grpc-listen` moves the
raw gRPC listener (loopback by default: only the transcoder's calls reach it); the edge's own calls to it
follow. `--picker` with `--pool` hands the inference routes to an endpoint picker (picker.py).
`--upstream-tls` dials the services' gRPC ports over mTLS, for services run with MODELRUNNER_TLS_*.

Usage: python deploy/envoy/render.py --descriptors OUT.pb --listen 127.0.0.1:8080 \
           [--grpc-listen 127.0.0.1:8081] [--upstream store=127.0.0.1:12435 ...] \
           [--picker 127.0.0.1:9002 --pool 10.0.0.5:12434,10.0.0.6:12434 [--picker-tls]] \
           [--upstream-tls cert.pem,key.pem,ca.pem[,server-name]] > envoy-local.yaml
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import yaml

ENVOY_YAML = pathlib.Path(__file__).resolve().with_name("envoy.yaml")
# A sibling script, not a package module: loaded by its path, whichever way this file was loaded.
_PICKER_SPEC = importlib.util.spec_from_file_location("deploy_envoy_picker", ENVOY_YAML.with_name("picker.py"))
picker = importlib.util.module_from_spec(_PICKER_SPEC)
_PICKER_SPEC.loader.exec_module(picker)
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
HTTP_MANAGER = "envoy.filters.network.http_connection_manager"
# The upstreams the edge routes to, as the local launcher starts them.
LOCAL_UPSTREAMS = {
    "gateway": "127.0.0.1:12434",
    "store": "127.0.0.1:12435",
    "distribution": "127.0.0.1:12436",
    "runner": "127.0.0.1:12437",
}


def load() -> dict[str, Any]:
    return yaml.safe_load(ENVOY_YAML.read_text())


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def _socket(node: dict[str, Any], address: str) -> None:
    host, port = _split(address)
    node["socket_address"] = {"address": host, "port_value": port}


def http_managers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTTP connection managers of every listener, in order (the edge's first)."""
    return [
        f["typed_config"]
        for listener in config["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for f in chain["filters"]
        if f["name"] == HTTP_MANAGER
    ]


def routes(config: dict[str, Any], listener: str) -> list[dict[str, Any]]:
    """A listener's routes, in match order."""
    (item,) = [item for item in config["static_resources"]["listeners"] if item["name"] == listener]
    (chain,) = item["filter_chains"]
    (manager,) = [f["typed_config"] for f in chain["filters"] if f["name"] == HTTP_MANAGER]
    return manager["route_config"]["virtual_hosts"][0]["routes"]


def edge_routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The public listener's routes, in match order."""
    return routes(config, "edge")


GRPC_UPSTREAMS = ("store", "distribution", "runner")


class UpstreamTls(NamedTuple):
    """PEM files Envoy dials the services' gRPC ports with when they serve TLS (MODELRUNNER_TLS_*):
    its client certificate for mTLS, the CA the services' certificates chain to, and the name they carry."""

    cert: str
    key: str
    ca: str
    server_name: str = ""

    @classmethod
    def parse(cls, text: str) -> UpstreamTls:
        parts = text.split(",")
        if len(parts) not in (3, 4) or not all(parts[:3]):
            raise ValueError(f"--upstream-tls takes CERT,KEY,CA[,SERVER_NAME], not {text!r}")
        return cls(*(str(pathlib.Path(p).resolve()) for p in parts[:3]), *parts[3:])

    def transport_socket(self) -> dict[str, Any]:
        context: dict[str, Any] = {
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": {"filename": self.cert}, "private_key": {"filename": self.key}}],
                "validation_context": {"trusted_ca": {"filename": self.ca}},
            },
        }
        if self.server_name:
            context["sni"] = self.server_name
            context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": self.server_name}}
            ]
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", **context,
            },
        }


def _dial_with_tls(cluster: dict[str, Any], upstream_tls: UpstreamTls) -> None:
    cluster["transport_socket"] = upstream_tls.transport_socket()
    for check in cluster.get("health_checks", []):
        check["tls_options"] = {"alpn_protocols": ["h2"]}


def render(
    config: dict[str, Any],
    *,
    descriptors: pathlib.Path,
    upstreams: Mapping[str, str],
    listen: str | None = None,
    grpc_listen: str | None = None,
    probes_listen: str | None = None,
    admin: str | None = None,
    endpoint_picker: str | None = None,
    pool: Sequence[str] = (),
    picker_tls: bool = False,
    upstream_tls: UpstreamTls | None = None,
) -> dict[str, Any]:
    """Points `config` (envoy.yaml, loaded) at local addresses; with `endpoint_picker`, its inference
    routes go to the `pool` endpoint the picker chooses. Returns it."""
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, address in upstreams.items():
        if name not in clusters:
            raise ValueError(f"envoy.yaml has no cluster {name!r} (it has {sorted(clusters)})")
        _socket(clusters[name]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"], address)
    listeners = {item["name"]: item for item in config["static_resources"]["listeners"]}
    if listen:
        _socket(listeners["edge"]["address"], listen)
    if grpc_listen:
        _socket(listeners["grpc"]["address"], grpc_listen)
        host, port = _split(grpc_listen)
        loopback = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # the edge dials its own listener
        _socket(clusters["edge_grpc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
                f"{loopback}:{port}")
    if probes_listen:
        _socket(listeners["probes"]["address"], probes_listen)
    if admin:
        _socket(config["admin"]["address"], admin)
        _socket(clusters["envoy_admin"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"], admin)
    for manager in http_managers(config):
        for f in manager.get("http_filters", []):
            if f["name"] == TRANSCODER:
                f["typed_config"]["proto_descriptor"] = str(descriptors)
        for host in manager["route_config"]["virtual_hosts"]:
            for route in host["routes"]:
                per_route = route.get("typed_per_filter_config", {}).get(TRANSCODER)
                if per_route is not None:
                    per_route["proto_descriptor"] = str(descriptors)
    if upstream_tls is not None:
        for name in GRPC_UPSTREAMS:
            _dial_with_tls(clusters[name], upstream_tls)
    if endpoint_picker:
        picker.add_picker(http_managers(config)[0], config["static_resources"]["clusters"],
                          picker=endpoint_picker, pool=pool, tls=picker_tls)
    elif pool:
        raise ValueError("a pool needs an endpoint picker (--picker)")
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptors", type=pathlib.Path, required=True, help="from build_descriptors.py")
    parser.add_argument("--listen", required=True, help="the edge's host:port (the local gateway holds 12434)")
    parser.add_argument("--grpc-listen", default="127.0.0.1:12439",
                        help="the raw gRPC listener (loopback unless you mean to offer raw gRPC)")
    parser.add_argument("--probes-listen", default="127.0.0.1:9902")
    parser.add_argument("--admin", default="127.0.0.1:9901")
    parser.add_argument(
        "--upstream", action="append", default=[], metavar="NAME=HOST:PORT", help="override a local upstream"
    )
    parser.add_argument("--picker", metavar="HOST:PORT",
                        help="an endpoint picker (the Inference Extension's EPP, ext_proc) for the inference routes")
    parser.add_argument("--pool", default="", metavar="IP:PORT[,IP:PORT...]",
                        help="the replicas the picker may choose (each serves the inference APIs)")
    parser.add_argument("--picker-tls", action="store_true", help="the picker serves TLS (the EPP's default)")
    parser.add_argument("--upstream-tls", metavar="CERT,KEY,CA[,SERVER_NAME]",
                        help="dial the Store, Distribution and Runner over mTLS (services run with MODELRUNNER_TLS_*)")
    args = parser.parse_args(argv)
    try:
        upstream_tls = UpstreamTls.parse(args.upstream_tls) if args.upstream_tls else None
    except ValueError as exc:
        parser.error(str(exc))
    if bool(args.picker) != bool(args.pool):
        parser.error("--picker and --pool go together")
    upstreams = dict(LOCAL_UPSTREAMS)
    for item in args.upstream:
        name, _, address = item.partition("=")
        upstreams[name] = address
    config = render(
        load(),
        descriptors=args.descriptors.resolve(),
        upstreams=upstreams,
        listen=args.listen,
        grpc_listen=args.grpc_listen,
        probes_listen=args.probes_listen,
        admin=args.admin,
        endpoint_picker=args.picker,
        pool=[item for item in args.pool.split(",") if item],
        picker_tls=args.picker_tls,
        upstream_tls=upstream_tls,
    )
    yaml.safe_dump(config, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
