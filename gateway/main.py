"""`python -m modelrunner.gateway`: uvicorn on HTTP_LISTEN and, in the same event loop, a gRPC server
with grpc.health.v1 only (so every process reports health the same way).

On SIGTERM/SIGINT: health turns NOT_SERVING, uvicorn stops accepting and drains in-flight requests
(streams included) for the grace period, then the channels to the services close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import uvicorn

from modelrunner.common import config
from modelrunner.common.server import GrpcService, grace_seconds, init_process, wait_for_signal
from modelrunner.common.telemetry import shutdown_telemetry
from modelrunner.gateway.app import create_app
from modelrunner.gateway.backends import Backends
from modelrunner.gateway.settings import GATEWAY_SETTINGS, GatewayOptions

log = logging.getLogger(__name__)

SETTINGS = (
    config.HTTP_LISTEN,
    config.LISTEN,
    config.GATEWAY_ADDR,
    config.STORE_ADDR,
    config.DISTRIBUTION_ADDR,
    config.RUNNER_ADDR,
    *GATEWAY_SETTINGS,
    *config.COMMON,
)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process decides when to stop (and then drains)."""

    def capture_signals(self):  # type: ignore[override]
        return contextlib.nullcontext()


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def run(args) -> None:
    backends = Backends.connect(args.store_addr, args.distribution_addr, args.runner_addr)
    app = create_app(backends, GatewayOptions.from_args(args))
    host, port = split_host_port(args.http_listen)
    grace = grace_seconds(args)
    server = _Server(
        uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=int(grace),
        )
    )
    health = GrpcService(args.listen or args.gateway_addr, [])
    stop = wait_for_signal()
    await health.start()
    serving = asyncio.create_task(server.serve())
    log.info("serving", extra={"fields": {"http": args.http_listen, "grpc_health": health.listen}})
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down", extra={"fields": {"grace_s": grace}})
        server.should_exit = True
        await health.stop(grace)
        await serving  # raises if uvicorn could not start (e.g. the port is taken)
    finally:
        stopping.cancel()
        await backends.close()
        shutdown_telemetry()


def main(argv: Sequence[str] | None = None) -> None:
    args = config.parse("Model Runner HTTP gateway", SETTINGS, argv)
    init_process("gateway", args)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run(args))


def _loop_factory():
    """uvloop when installed (uvicorn[standard] brings it): about a third less per-request overhead."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
