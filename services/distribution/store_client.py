"""The Store seen from the Distribution: where pulled blobs go and pushed blobs come from.

`BlobSink` / `BlobSource` are the seam the pull and push logic is written against; `StoreClient`
implements both over the Store's gRPC API. Store errors keep their status code and message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import grpc

from modelrunner.common.channels import open_channel
from modelrunner.common.errors import ANSWERED, REASON_KEY, ServiceError
from modelrunner.common.oci import Blob
from modelrunner.v1 import store_pb2, store_pb2_grpc


@dataclass(frozen=True)
class BlobState:
    exists: bool
    partial: int  # bytes of a partial write to resume from


@dataclass(frozen=True)
class LocalManifest:
    raw: bytes
    media_type: str
    digest: str
    reference: str


class BlobSink(Protocol):
    async def stat(self, digest: str) -> BlobState: ...

    async def write(self, blob: Blob, offset: int, chunks: AsyncIterator[bytes]) -> None:
        """Writes the blob from `offset`; an exception from `chunks` leaves the bytes written as a partial."""

    async def commit(self, manifest: bytes, tags: list[str]) -> str:
        """Commits the manifest under `tags`; returns the model id."""


class BlobSource(Protocol):
    async def manifest(self, name: str) -> LocalManifest: ...

    def read(self, digest: str, offset: int) -> AsyncIterator[bytes]: ...

    async def tags_of(self, model_id: str) -> list[str]: ...


def store_error(exc: grpc.aio.AioRpcError) -> ServiceError:
    """The Store's status as this service's own, with its reason (a full disk stays a full disk)."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServiceError(code, f"the Store is unavailable: {exc.details()}")
    reason = dict(exc.trailing_metadata() or ()).get(REASON_KEY, "")
    return ServiceError(code, exc.details() or f"Store call failed ({code.name})", reason)


# What CallStarted hands each WriteBlob call to, in the context the writer made the call in.
_on_start: ContextVar[Callable[[grpc.aio.StreamUnaryCall], None] | None] = ContextVar("on_start", default=None)


class CallStarted(grpc.aio.StreamUnaryClientInterceptor):
    """Hands a blob writer its call as soon as it starts, to watch for ANSWERED: the OpenTelemetry
    interceptor outside this one hands the call back only once it has ended, too late for that."""

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        call = await continuation(client_call_details, request_iterator)
        on_start = _on_start.get()
        if on_start is not None:
            on_start(call)
        return call


def store_channel(address: str) -> grpc.aio.Channel:
    return open_channel(address, [CallStarted()])


def answered(metadata: asyncio.Future) -> bool:
    """Whether the Store sent ANSWERED: it decided the write before the stream's end."""
    if not metadata.done() or metadata.cancelled() or metadata.exception() is not None:
        return False
    return tuple(ANSWERED) in tuple(metadata.result() or ())


class StoreClient:
    """BlobSink and BlobSource over the Store's gRPC API."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = store_pb2_grpc.StoreStub(channel)

    async def stat(self, digest: str) -> BlobState:
        try:
            reply = await self.stub.StatBlob(store_pb2.StatBlobRequest(digest=digest))
        except grpc.aio.AioRpcError as exc:
            raise store_error(exc) from None
        return BlobState(reply.exists, int(reply.partial))

    async def write(self, blob: Blob, offset: int, chunks: AsyncIterator[bytes]) -> None:
        # A request iterator, not call.write(): the OpenTelemetry aio client interceptor on our channels
        # awaits the call's end before handing the call back, so call.write() would never be reached.
        failure: list[Exception] = []
        metadata: list[asyncio.Future] = []  # the call's initial metadata (CallStarted): ANSWERED if decided early

        async def requests() -> AsyncIterator[store_pb2.WriteBlobRequest]:
            header = store_pb2.BlobHeader(digest=blob.digest, size=blob.size, offset=offset, media_type=blob.media_type)
            yield store_pb2.WriteBlobRequest(header=header)
            try:
                async for data in chunks:
                    if metadata and answered(metadata[0]):  # the blob existed, the disk is full: stop sending
                        return
                    yield store_pb2.WriteBlobRequest(data=data)
            except Exception as exc:  # the source broke: end the stream, the Store keeps what it got
                failure.append(exc)

        token = _on_start.set(lambda started: metadata.append(asyncio.ensure_future(started.initial_metadata())))
        call = self.stub.WriteBlob(requests())
        _on_start.reset(token)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            if failure:
                raise failure[0] from None
            raise store_error(exc) from None
        except asyncio.CancelledError:
            call.cancel()
            raise
        finally:
            for future in metadata:
                future.cancel()
        if failure:
            raise failure[0]

    async def commit(self, manifest: bytes, tags: list[str]) -> str:
        try:
            model = await self.stub.PutManifest(store_pb2.PutManifestRequest(manifest=manifest, tags=tags))
        except grpc.aio.AioRpcError as exc:
            raise store_error(exc) from None
        return model.id

    async def manifest(self, name: str) -> LocalManifest:
        try:
            reply = await self.stub.GetManifest(store_pb2.GetManifestRequest(name=name))
        except grpc.aio.AioRpcError as exc:
            raise store_error(exc) from None
        return LocalManifest(reply.manifest, reply.media_type, reply.digest, reply.reference)

    async def read(self, digest: str, offset: int) -> AsyncIterator[bytes]:
        call = self.stub.ReadBlob(store_pb2.ReadBlobRequest(digest=digest, offset=offset))
        try:
            async for chunk in call:
                yield chunk.data
        except grpc.aio.AioRpcError as exc:
            raise store_error(exc) from None
        finally:
            call.cancel()

    async def tags_of(self, model_id: str) -> list[str]:
        try:
            model = await self.stub.GetModel(store_pb2.GetModelRequest(name=model_id))
        except grpc.aio.AioRpcError as exc:
            raise store_error(exc) from None
        return list(model.tags)
