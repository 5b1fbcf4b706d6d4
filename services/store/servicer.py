"""The Store's gRPC servicer: protos in and out of the ModelStore; no storage logic here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from modelrunner.common.artifact_config import model_config, parse_created
from modelrunner.store.layout import check_digest
from modelrunner.store.models import ModelInfo, ModelStore
from modelrunner.store.package import package
from modelrunner.v1 import store_pb2, store_pb2_grpc, types_pb2

from modelrunner.common import media_types
from modelrunner.common.errors import ANSWERED, ServiceError, invalid

SERVICE_NAME = store_pb2.DESCRIPTOR.services_by_name["Store"].full_name


def model_message(info: ModelInfo) -> types_pb2.Model:
    return types_pb2.Model(
        id=info.id,
        tags=info.tags,
        created=parse_created(info.config),
        config=model_config(info.config),
        size=info.manifest.size if info.manifest else 0,
    )


def whole(value: float, what: str) -> int:
    """A byte count sent as a double: a non-negative integer."""
    if value < 0 or not float(value).is_integer():
        raise invalid(f"{what} {value} must be a non-negative whole number of bytes")
    return int(value)


async def _drain(context: grpc.aio.ServicerContext, request_iterator, limit: float) -> None:
    """Says the answer is decided (ANSWERED, so a writer that watches stops sending), then reads what the
    writer still sends (up to the bytes it declared) before the call ends.

    A grpc client still sending when the server answers can see INTERNAL instead of the answer, so a
    writer that is told "existed" or an error early gets that answer reliably.
    """
    await context.send_initial_metadata((ANSWERED,))
    received = 0
    try:
        async for message in request_iterator:
            received += len(message) if isinstance(message, memoryview) else len(message.data)
            if received > limit:
                return
    except grpc.RpcError:
        return


class StoreServicer(store_pb2_grpc.StoreServicer):
    def __init__(self, store: ModelStore) -> None:
        self.store = store

    async def ListModels(self, request, context) -> store_pb2.ListModelsResponse:
        return store_pb2.ListModelsResponse(models=[model_message(i) for i in self.store.list_models()])

    async def GetModel(self, request, context) -> types_pb2.Model:
        digest, _ = self.store.resolve(request.name)
        return model_message(self.store.info(digest))

    async def DeleteModel(self, request, context) -> store_pb2.DeleteModelResponse:
        actions = await self.store.delete(request.name, request.force)
        return store_pb2.DeleteModelResponse(
            actions=[store_pb2.DeleteAction(untagged=a.untagged, deleted=a.deleted) for a in actions]
        )

    async def TagModel(self, request, context) -> store_pb2.TagModelResponse:
        tag, digest = await self.store.tag(request.source, request.repo, request.tag)
        return store_pb2.TagModelResponse(tag=tag, model=model_message(self.store.info(digest)))

    async def PackageModel(self, request, context) -> types_pb2.Model:
        digest = await package(self.store, request)
        return model_message(self.store.info(digest))

    async def PurgeModels(self, request, context) -> store_pb2.PurgeModelsResponse:
        count, reclaimed = await self.store.purge()
        return store_pb2.PurgeModelsResponse(deleted_models=count, reclaimed_bytes=reclaimed)

    async def Prune(self, request, context) -> store_pb2.PruneResponse:
        count, reclaimed = await self.store.prune()
        return store_pb2.PruneResponse(removed_blobs=count, reclaimed_bytes=reclaimed)

    async def DiskUsage(self, request, context) -> store_pb2.DiskUsageResponse:
        return store_pb2.DiskUsageResponse(models_disk_usage=await asyncio.to_thread(self.store.blobs.disk_usage))

    async def ResolveModel(self, request, context) -> store_pb2.ResolvedModel:
        digest, reference = self.store.resolve(request.name)
        info = self.store.info(digest)
        self.store.check_blobs(info)
        manifest = info.manifest
        assert manifest is not None  # check_blobs raised otherwise
        path = self.store.blob_path
        mmproj = manifest.layers_of(media_types.MMPROJ)
        license_ = manifest.layers_of(media_types.LICENSE)
        return store_pb2.ResolvedModel(
            id=digest,
            reference=reference,
            config=model_config(info.config),
            gguf_paths=[path(layer.digest) for layer in manifest.layers_of(media_types.GGUF)],
            mmproj_path=path(mmproj[0].digest) if mmproj else "",
            license_path=path(license_[0].digest) if license_ else "",
            chat_template=self.store.chat_template(manifest),
            layers=[
                types_pb2.Descriptor(media_type=b.media_type, digest=b.digest, size=b.size, annotations=b.annotations)
                for b in manifest.layers
            ],
        )

    async def StatBlob(self, request, context) -> store_pb2.StatBlobResponse:
        check_digest(request.digest)
        stat = self.store.blobs.stat(request.digest)
        return store_pb2.StatBlobResponse(exists=stat.exists, size=stat.size, partial=stat.partial)

    async def WriteBlob(self, request_iterator, context) -> store_pb2.WriteBlobResponse:
        first = await anext(aiter(request_iterator), None)
        if not isinstance(first, store_pb2.WriteBlobRequest) or first.WhichOneof("part") != "header":
            raise invalid("the first WriteBlob message must be the header (digest, size, offset)")
        header = first.header

        async def data() -> AsyncIterator[memoryview]:
            async for message in request_iterator:
                if not isinstance(message, memoryview):
                    raise invalid("only the first WriteBlob message may be a header")
                yield message

        size = offset = 0
        try:
            size, offset = whole(header.size, "size"), whole(header.offset, "offset")
            result = await self.store.blobs.write(header.digest, size, offset, data())
        except ServiceError:
            await _drain(context, request_iterator, max(size - offset, 0))
            raise
        await _drain(context, request_iterator, size - offset)
        return store_pb2.WriteBlobResponse(digest=result.digest, size=result.size, existed=result.existed)

    async def ReadBlob(self, request, context) -> AsyncIterator[store_pb2.BlobChunk]:
        check_digest(request.digest)
        async for data in self.store.blobs.read(request.digest, whole(request.offset, "offset")):
            yield store_pb2.BlobChunk(data=data)

    async def PutManifest(self, request, context) -> types_pb2.Model:
        digest = await self.store.put_manifest(request.manifest, list(request.tags))
        return model_message(self.store.info(digest))

    async def GetManifest(self, request, context) -> store_pb2.GetManifestResponse:
        digest, reference = self.store.resolve(request.name)
        info = self.store.info(digest)
        if info.manifest is None:
            self.store.check_blobs(info)  # DATA_LOSS naming the missing manifest
        raw = await self.store.blobs.read_bytes(digest)
        return store_pb2.GetManifestResponse(
            digest=digest,
            media_type=info.manifest.media_type if info.manifest else "",
            manifest=raw,
            reference=reference,
        )


def parse_write_request(raw: bytes) -> store_pb2.WriteBlobRequest | memoryview:
    """WriteBlobRequest.FromString, except that a data message (the `data` field alone: tag 0x12, varint
    length, bytes) is a view of its bytes in `raw`, saving the parser's copy and `.data`'s copy of
    every MiB received."""
    if raw[:1] == b"\x12":
        length = shift = 0
        for pos in range(1, min(len(raw), 11)):
            length |= (raw[pos] & 0x7F) << shift
            if raw[pos] < 0x80:
                if pos + 1 + length == len(raw):
                    return memoryview(raw)[pos + 1 :]
                break
            shift += 7
    return store_pb2.WriteBlobRequest.FromString(raw)


class _Handlers:
    """Stands in for the server to collect the method handlers the generated code registers."""

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.handlers = handlers


def register(servicer: store_pb2_grpc.StoreServicer):
    """Adds the servicer to a server, with WriteBlob's data messages parsed by parse_write_request."""

    def add(server: grpc.aio.Server) -> None:
        collected = _Handlers()
        store_pb2_grpc.add_StoreServicer_to_server(servicer, collected)
        handlers = collected.handlers
        handlers["WriteBlob"] = handlers["WriteBlob"]._replace(request_deserializer=parse_write_request)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    return add
