"""The three services as the gateway sees them: stubs, addresses, and calls that say which service failed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelrunner.common.channels import open_channel
from modelrunner.common.errors import REASON_KEY
from modelrunner.v1 import distribution_pb2_grpc, runner_pb2, runner_pb2_grpc, store_pb2_grpc

HEALTH_TIMEOUT_S = 1.0
RUNNER_SERVICE = runner_pb2.DESCRIPTOR.services_by_name["Runner"].full_name


class UpstreamError(Exception):
    """A gRPC call to `service` failed; carries what the HTTP answer needs."""

    def __init__(
        self,
        service: str,
        address: str,
        code: grpc.StatusCode,
        details: str,
        retry_after: str = "",
        unreachable: bool = False,
        reason: str = "",
    ) -> None:
        super().__init__(f"{service}: {code.name}: {details}")
        self.service = service
        self.address = address
        self.code = code
        self.details = details
        self.retry_after = retry_after
        self.unreachable = unreachable  # the service is down or went away mid-call (not one reporting UNAVAILABLE)
        self.reason = reason  # REASON_KEY's value: why, where the code alone is ambiguous (disk_full)


def _trailer(error: grpc.aio.AioRpcError, name: str) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == name:
            return str(value)
    return ""


# What grpc's core says when the connection broke under a call (the service died mid-upload) while the
# channel still reads READY: the service never sends these. The INTERNAL is grpc aio's own, set when a
# write fails in the core (the peer's status, if any, is lost).
CORE_INTERNAL_DETAILS = frozenset({"Internal error from Core"})
CORE_TRANSPORT_PREFIXES = ("Stream removed", "Error in HTTP transport", "Socket closed")


def connection_lost(code: grpc.StatusCode, details: str, ready: bool) -> bool:
    """Whether a call failed because its connection did, not because the service said so: the core's
    own words, or the channel no longer READY. It is the service gone (503: retry), never a 500."""
    if code == grpc.StatusCode.INTERNAL:
        return details in CORE_INTERNAL_DETAILS or not ready
    if code == grpc.StatusCode.UNAVAILABLE:
        return not ready or details.startswith(CORE_TRANSPORT_PREFIXES)
    return False


@dataclass
class Service:
    """One service: its name (for error messages), address, channel and stub."""

    name: str
    address: str
    channel: grpc.aio.Channel
    stub: object

    def _error(self, error: grpc.aio.AioRpcError) -> UpstreamError:
        code, details = error.code(), error.details() or ""
        lost = connection_lost(code, details, self.channel.get_state() == grpc.ChannelConnectivity.READY)
        code = grpc.StatusCode.UNAVAILABLE if lost else code
        return UpstreamError(self.name, self.address, code, details, _trailer(error, "retry-after"), unreachable=lost,
                             reason=_trailer(error, REASON_KEY))

    async def unary(self, method: str, request, timeout: float):
        """Calls a unary method by name with a deadline."""
        try:
            return await getattr(self.stub, method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise self._error(error) from None

    def stream(self, method: str, request, timeout: float | None = None) -> ServerStream:
        return ServerStream(self, getattr(self.stub, method)(request, timeout=timeout))

    async def health(self, service: str = "") -> bool:
        """Whether the process (or, named, one of its gRPC services) answers SERVING."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


class ServerStream:
    """A server-streaming call whose errors become UpstreamError; `cancel()` ends the call at once."""

    def __init__(self, service: Service, call: grpc.aio.UnaryStreamCall) -> None:
        self.service = service
        self.call = call

    async def __aiter__(self) -> AsyncIterator:
        try:
            async for item in self.call:
                yield item
        except grpc.aio.AioRpcError as error:
            raise self.service._error(error) from None

    def cancel(self) -> None:
        self.call.cancel()


@dataclass
class Backends:
    store: Service
    distribution: Service
    runner: Service

    @classmethod
    def connect(cls, store_addr: str, distribution_addr: str, runner_addr: str) -> Backends:
        def service(name: str, address: str, stub_class) -> Service:
            channel = open_channel(address)
            return Service(name, address, channel, stub_class(channel))

        return cls(
            store=service("store", store_addr, store_pb2_grpc.StoreStub),
            distribution=service("distribution", distribution_addr, distribution_pb2_grpc.DistributionStub),
            runner=service("runner", runner_addr, runner_pb2_grpc.RunnerStub),
        )

    def all(self) -> list[Service]:
        return [self.store, self.distribution, self.runner]

    async def health(self) -> dict[str, bool]:
        results = await asyncio.gather(*(s.health() for s in self.all()))
        return {s.name: ok for s, ok in zip(self.all(), results)}

    async def serving_health(self) -> dict[str, bool]:
        """What inference needs: the Store, and the Runner service itself, which a Runner preloading its
        models reports NOT_SERVING until they are loaded (the Distribution is not needed to serve)."""
        store, runner = await asyncio.gather(self.store.health(), self.runner.health(RUNNER_SERVICE))
        return {"store": store, "runner": runner}

    async def close(self) -> None:
        await asyncio.gather(*(s.channel.close() for s in self.all()))
