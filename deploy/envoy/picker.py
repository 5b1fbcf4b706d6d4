"""The edge as its own inference gateway: an endpoint picker (the Gateway API Inference Extension's EPP)
chooses the replica of each inference request, without a Gateway API implementation.

As the EPP's standalone Envoy does: an ext_proc filter streams each request (headers, then the body in
FULL_DUPLEX_STREAMED) to the picker, which answers the chosen replica in `x-gateway-destination-endpoint`
(ip:port) and clears the route cache; an ORIGINAL_DST cluster then dials the address that header names.
The picker also sees the responses, as its own config sends them (it counts what it dispatched).

Hardening beyond the EPP's config: the header is stripped from the client's request before the picker
runs (nobody else may name an upstream), only endpoints of the pool given here are dialled (a route
matches them; anything else is answered 503), and a picker that cannot be reached fails the request
(503) instead of letting it through to no one. Every other route keeps its upstream, ext_proc off.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

EXT_PROC = "envoy.filters.http.ext_proc"
HEADER_MUTATION = "envoy.filters.http.header_mutation"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
DESTINATION = "x-gateway-destination-endpoint"
PICKER_CLUSTER = "endpoint_picker"
POOL_CLUSTER = "endpoint_pool"
# The inference APIs a replica serves (its gateway speaks OpenAI and Ollama's), DMR's /engines forms too.
INFERENCE = r"^(/engines(/[^/]+)?)?/v1/(chat/completions|completions|embeddings)$|^/api/(chat|generate)$"
_HTTP2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
# As the EPP's standalone config: a request in flight is one stream to the picker, so the defaults
# (1024) would cap the edge's concurrent inference requests.
_BREAKERS = {"thresholds": [{"max_connections": 40000, "max_pending_requests": 40000, "max_requests": 40000}]}


def host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`, split."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


def pool_endpoint(address: str) -> str:
    """An endpoint as the picker writes it in the header: an IP literal and a port (ORIGINAL_DST dials
    addresses, it resolves no names)."""
    host, port = host_port(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"pool endpoint {address!r} is not ip:port (the picker answers addresses)") from None
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _ext_proc_filter() -> dict[str, Any]:
    return {
        "name": EXT_PROC,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": PICKER_CLUSTER}, "timeout": "10s"},
            "failure_mode_allow": False,
            "status_on_error": {"code": "ServiceUnavailable"},
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SEND",
                "request_body_mode": "FULL_DUPLEX_STREAMED",
                "response_body_mode": "FULL_DUPLEX_STREAMED",
                "request_trailer_mode": "SEND",
                "response_trailer_mode": "SEND",
            },
            "message_timeout": "1000s",
        },
    }


def _strip_destination_filter() -> dict[str, Any]:
    return {
        "name": HEADER_MUTATION,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": DESTINATION}]},
        },
    }


def _picker_cluster(address: str, tls: bool) -> dict[str, Any]:
    host, port = host_port(address)
    try:
        ipaddress.ip_address(host)
        kind: dict[str, Any] = {"type": "STATIC"}
    except ValueError:
        kind = {"type": "STRICT_DNS", "dns_lookup_family": "V4_ONLY"}
    cluster = {
        "name": PICKER_CLUSTER,
        **kind,
        "connect_timeout": "2s",
        "typed_extension_protocol_options": _HTTP2,
        "circuit_breakers": _BREAKERS,
        "load_assignment": {
            "cluster_name": PICKER_CLUSTER,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
            ]}],
        },
        # The EPP answers grpc.health.v1 for its ext_proc service on the same port.
        "health_checks": [{
            "timeout": "2s",
            "interval": "5s",
            "unhealthy_threshold": 3,
            "healthy_threshold": 1,
            "reuse_connection": True,
            "grpc_health_check": {"service_name": "envoy.service.ext_proc.v3.ExternalProcessor"},
        }],
    }
    if tls:  # the EPP serves TLS with a self-signed certificate of its own, which its config does not verify
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"alpn_protocols": ["h2"]},
            },
        }
        cluster["health_checks"][0]["tls_options"] = {"alpn_protocols": ["h2"]}
    return cluster


def _pool_cluster() -> dict[str, Any]:
    return {
        "name": POOL_CLUSTER,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "2s",
        "circuit_breakers": _BREAKERS,
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": DESTINATION},
    }


def _pool_routes(pool: Sequence[str], authz_off: dict[str, Any]) -> list[dict[str, Any]]:
    """The chosen replica's route (the header names a pool endpoint), and the answer when it does not.
    A request enters by the second (its header stripped); the picker's answer re-matches it."""
    chosen = "^(" + "|".join(re.escape(endpoint) for endpoint in pool) + ")$"
    return [
        {
            "match": {
                "safe_regex": {"regex": INFERENCE},
                "headers": [{"name": DESTINATION, "string_match": {"safe_regex": {"regex": chosen}}}],
            },
            "route": {"cluster": POOL_CLUSTER, "timeout": "0s", "idle_timeout": "600s"},
            "typed_per_filter_config": {EXT_AUTHZ: authz_off},  # each replica's gateway checks its own
        },
        {
            "match": {"safe_regex": {"regex": INFERENCE}},
            "direct_response": {"status": 503, "body": {"inline_string": "the endpoint picker chose no endpoint of the pool"}},
            "typed_per_filter_config": {EXT_AUTHZ: authz_off},
        },
    ]


def add_picker(
    manager: dict[str, Any], clusters: list[dict[str, Any]], *, picker: str, pool: Sequence[str], tls: bool = False
) -> None:
    """Routes `manager`'s (the edge's) inference requests to the replica `picker` chooses among `pool`."""
    endpoints = [pool_endpoint(item) for item in pool]
    if not endpoints:
        raise ValueError("the pool has no endpoint")
    filters = manager["http_filters"]
    (authz,) = [i for i, f in enumerate(filters) if f["name"] == EXT_AUTHZ]
    filters[authz + 1:authz + 1] = [_strip_destination_filter(), _ext_proc_filter()]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    off = {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "disabled": True}
    for route in routes:
        route.setdefault("typed_per_filter_config", {})[EXT_PROC] = dict(off)
    authz_off = {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", "disabled": True}
    first = 1 if "grpc" in routes[0]["match"] else 0  # raw gRPC stays refused before anything else
    routes[first:first] = _pool_routes(endpoints, authz_off)
    clusters += [_picker_cluster(picker, tls), _pool_cluster()]
