"""gRPC client channels between services, with trace propagation and the same message limits."""

from __future__ import annotations

import grpc

from modelrunner.common.server import GRPC_OPTIONS
from modelrunner.common.telemetry import client_interceptors

CLIENT_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Fail fast when a service is down, so callers can answer UNAVAILABLE instead of hanging.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS, interceptors=client_interceptors())
