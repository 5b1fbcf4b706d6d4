"""Model names to GGUF paths: the seam between the Runner's core and the Store.

The core only needs `ModelResolver.resolve`; the Store's `ResolveModel` RPC is the production one, and
tests can resolve names to files directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import grpc

from modelrunner.common.channels import open_channel
from modelrunner.common.errors import ServiceError
from modelrunner.v1 import store_pb2, store_pb2_grpc


@dataclass(frozen=True)
class ResolvedModel:
    reference: str              # fully qualified name, the key of loaded models and settings
    model_id: str               # "sha256:..."
    gguf_paths: tuple[str, ...]
    chat_template: str | None   # the artifact's template layer, if any


class ModelResolver(Protocol):
    async def resolve(self, name: str) -> ResolvedModel: ...


class StoreResolver:
    """Resolves through the Store service's `ResolveModel`, per request, so that a deleted or re-tagged
    model is never served stale. Requests for one name that arrive while its resolution is in flight
    share that call: a burst of 8 costs the Store (and this event loop) one call, not 8. The answer a
    request gets may come from a call started before it arrived, by at most that call's duration
    (about 2 ms; the timeout bounds it)."""

    def __init__(self, store_addr: str, timeout: float = 10.0) -> None:
        self._addr = store_addr
        self._timeout = timeout
        self._channel = open_channel(store_addr)
        self._stub = store_pb2_grpc.StoreStub(self._channel)
        self._in_flight: dict[str, asyncio.Task[ResolvedModel]] = {}

    async def resolve(self, name: str) -> ResolvedModel:
        call = self._in_flight.get(name)
        if call is None:
            call = self._in_flight[name] = asyncio.ensure_future(self._resolve(name))
            call.add_done_callback(lambda done: self._settled(name, done))
        # One waiter going away (its client hung up) must not cancel the call the others wait for.
        return await asyncio.shield(call)

    def _settled(self, name: str, call: asyncio.Task[ResolvedModel]) -> None:
        if self._in_flight.get(name) is call:
            del self._in_flight[name]
        if not call.cancelled():
            call.exception()  # retrieved here too, so a failure nobody waits for any more is not logged

    async def _resolve(self, name: str) -> ResolvedModel:
        try:
            resolved = await self._stub.ResolveModel(
                store_pb2.ResolveModelRequest(name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise ServiceError(exc.code(), exc.details() or f"model {name} not found") from exc
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE, f"the store at {self._addr} is unavailable: {exc.details()}"
                ) from exc
            raise ServiceError(exc.code(), f"the store failed to resolve {name}: {exc.details()}") from exc
        if not resolved.gguf_paths:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION, f"model {name} has no GGUF layer the Runner can load"
            )
        return ResolvedModel(
            reference=resolved.reference or name,
            model_id=resolved.id,
            gguf_paths=tuple(resolved.gguf_paths),
            chat_template=resolved.chat_template or None,
        )

    async def close(self) -> None:
        await self._channel.close()
