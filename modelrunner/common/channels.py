"""gRPC client channels between services, with trace propagation, the same message limits and, when
this process has TLS configured (tls.current()), TLS with its client certificate."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from modelrunner.common import tls
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


def open_channel(address: str, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> grpc.aio.Channel:
    """A channel to `address`; `interceptors` run inside the telemetry ones, nearest the call."""
    chain = [*client_interceptors(), *interceptors]
    settings = tls.current()
    if settings is None:
        return grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS, interceptors=chain)
    return grpc.aio.secure_channel(
        address,
        settings.channel_credentials(),
        options=[*CLIENT_OPTIONS, *settings.channel_options()],
        interceptors=chain,
    )


def open_sync_channel(address: str) -> grpc.Channel:
    """A blocking channel as open_channel's, for the CLI's probes and imports (no telemetry there)."""
    settings = tls.current()
    if settings is None:
        return grpc.insecure_channel(address, options=GRPC_OPTIONS)
    return grpc.secure_channel(
        address, settings.channel_credentials(), options=[*GRPC_OPTIONS, *settings.channel_options()]
    )
