"""The gRPC process every service runs: grpc.aio, health, reflection, telemetry, TLS, graceful shutdown.

On SIGTERM or SIGINT the health status turns NOT_SERVING, new calls are refused, and calls in flight
(streams included) get the grace period to finish before they are cancelled. With MODELRUNNER_TLS_*
set the port speaks TLS only, health included, so plaintext probes fail (see tls.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from modelrunner.common import tls
from modelrunner.common.interceptors import ServiceErrorInterceptor
from modelrunner.common.lifeline import die_with_launcher
from modelrunner.common.logs import setup_logging
from modelrunner.common.telemetry import server_interceptors, setup_telemetry, shutdown_telemetry

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# Clients ping idle channels every 30 s (channels.py); a server that does not allow pings without
# calls answers GOAWAY "too_many_pings" after a few, and the next call fails with UNAVAILABLE. The
# key's C name is ..._MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, but its string is this one: with the C
# name spelled out, gRPC ignored it, and a generation running past a few minutes failed with 503.
SERVER_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


class GrpcService:
    """A grpc.aio server with health and reflection; `service_names` are the full names it serves.

    It serves TLS when this process has TLS configured (tls.current()), else plaintext."""

    def __init__(self, listen: str, service_names: Iterable[str]) -> None:
        self.listen = listen
        self.service_names = list(service_names)
        self.server = grpc.aio.server(
            interceptors=[*server_interceptors(), ServiceErrorInterceptor()], options=SERVER_OPTIONS
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0
        self.tls = tls.current()
        self.held: set[str] = set()  # services that start NOT_SERVING, until their owner sets them SERVING

    @property
    def transport(self) -> str:
        """What the port speaks (plaintext, tls or mtls), for the line a service logs when it serves."""
        return self.tls.mode if self.tls is not None else "plaintext"

    async def start(self) -> None:
        if self.tls is None:
            self.port = self.server.add_insecure_port(self.listen)
        else:
            self.port = self.server.add_secure_port(self.listen, self.tls.server_credentials())
        if self.port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        await self.server.start()
        for name in ["", *self.service_names]:
            serving = name not in self.held
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


def wait_for_signal() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def init_process(service: str, args) -> None:
    """Logging, telemetry, TLS and the optional Prometheus endpoint, from the common settings.

    The TLS files are read here, so a bad one stops the process before it serves anything."""
    die_with_launcher()
    setup_logging(service, args.log_level, args.log_format)
    try:
        settings = tls.from_args(args)
        if settings is not None:
            settings.check_can_serve()
    except tls.TlsError as exc:
        raise SystemExit(f"modelrunner {service}: {exc}") from None
    tls.configure(settings)
    setup_telemetry(service, args.trace_file)
    if args.metrics_listen:
        host, _, port = args.metrics_listen.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0")


async def serve(
    service: str,
    listen: str,
    service_names: Iterable[str],
    register: Callable[[grpc.aio.Server], None],
    *,
    grace: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    on_start: Callable[[GrpcService], Awaitable[None]] | None = None,
    hold: Iterable[str] = (),
) -> None:
    """Runs a service until SIGTERM/SIGINT, then drains it. The services in `hold` start NOT_SERVING;
    `on_start` runs as a task once the port serves (and sets them SERVING when they can take work)."""
    grpc_service = GrpcService(listen, service_names)
    grpc_service.held = set(hold)
    register(grpc_service.server)
    stop = wait_for_signal()
    await grpc_service.start()
    fields = {"service": service, "listen": listen, "port": grpc_service.port, "grpc": grpc_service.transport}
    log.info("serving", extra={"fields": fields})
    started = asyncio.create_task(on_start(grpc_service)) if on_start is not None else None
    await stop.wait()
    if started is not None:
        started.cancel()
    log.info("shutting down", extra={"fields": {"grace_s": grace}})
    await grpc_service.stop(grace)
    if on_stop is not None:
        await on_stop()
    shutdown_telemetry()


def grace_seconds(args) -> float:
    return float(args.shutdown_grace)

