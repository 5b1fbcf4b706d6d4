"""Push: upload the blobs the registry lacks (mounting them from a sibling repository when it can),
then the manifest under its tag. Blobs stream from the Store in chunks: memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from modelrunner.common import media_types
from modelrunner.common.errors import ServiceError, invalid
from modelrunner.common.names import InvalidReference, parse_reference
from modelrunner.distribution.context import Context
from modelrunner.common.oci import Blob
from modelrunner.distribution.manifests import parse_model_manifest
from modelrunner.distribution.progress import LayerCounter, TransferProgress
from modelrunner.distribution.registry import RegistryClient, SessionLost, TransferError, backoff
from modelrunner.distribution.store_client import BlobSource
from modelrunner.distribution.tasks import run_all

log = logging.getLogger(__name__)

MAX_STALLED_ATTEMPTS = 6


async def _slice(source: BlobSource, digest: str, offset: int, length: int, counter: LayerCounter) -> AsyncIterator[bytes]:
    """`length` bytes of a stored blob from `offset`, counted as they go."""
    left = length
    async with aclosing(source.read(digest, offset)) as chunks:
        async for data in chunks:
            data = data[:left]
            left -= len(data)
            counter.current += len(data)
            yield data
            if not left:
                return
    if left:
        raise ServiceError(grpc.StatusCode.DATA_LOSS, f"the Store's blob {digest} ended {left} bytes early")


async def upload_blob(
    client: RegistryClient, repository: str, location: str, blob: Blob, source: BlobSource, counter: LayerCounter,
    chunk: int,
) -> None:
    """Uploads `blob` through the session at `location`; a session the registry loses (a 404 on its URL) is
    started over once in a new one, as Docker's push retries a layer. Each start over sends the whole blob
    again, so a second loss is the registry's failure: UNAVAILABLE naming its answer, never NOT_FOUND."""
    try:
        await _upload_session(client, repository, location, blob, source, counter, chunk)
        return
    except SessionLost as lost:
        log.warning(
            "registry lost an upload session, starting the blob over",
            extra={"fields": {"registry": client.registry, "digest": blob.digest, "error": str(lost)}},
        )
    counter.current = 0
    location = await client.start_upload(repository) or location  # None only for a mount
    try:
        await _upload_session(client, repository, location, blob, source, counter, chunk)
    except SessionLost as again:
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"the upload of blob {blob.digest} to {client.registry}/{repository} failed: {again}, the second "
            "session of this blob it lost; retry the push",
        ) from None


async def _upload_session(
    client: RegistryClient, repository: str, location: str, blob: Blob, source: BlobSource, counter: LayerCounter,
    chunk: int,
) -> None:
    """Chunked upload session: PATCHes with Content-Range, resumed from the registry's offset after a break,
    then the commit; raises SessionLost when the registry answers a PATCH or the commit with a 404.

    A registry that kept part of the broken PATCH may refuse the session from then on (docker-registry
    does: the offset signed into the upload URL no longer matches what it holds); the blob then starts
    over in a new session.
    """
    offset, stalled, furthest = 0, 0, 0
    while offset < blob.size:
        length = min(chunk, blob.size - offset)
        try:
            location = await client.upload_chunk(location, offset, length, _slice(source, blob.digest, offset, length, counter))
            offset += length
            if offset > furthest:  # progress only past the furthest point: a registry that loses what it
                furthest, stalled = offset, 0  # took after each break would otherwise loop forever
        except TransferError as exc:
            stalled += 1
            if stalled >= MAX_STALLED_ATTEMPTS:
                raise client.unavailable(exc) from None
            await asyncio.sleep(backoff(stalled))
            try:
                offset, location = await client.upload_offset(location)
            except SessionLost:
                offset, location = 0, await client.start_upload(repository) or location  # None only for a mount
            if offset > blob.size:
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"registry {client.registry} says its upload of {blob.digest} holds {offset} bytes, more than "
                    f"the blob's {blob.size}",
                )
            counter.current = offset
    await client.finish_upload(location, blob.digest)


def mount_sources(tags: list[str], registry: str, repository: str) -> list[str]:
    """Other repositories of the same registry where the model is tagged (blobs to mount from)."""
    sources = []
    for tag in tags:
        try:
            ref = parse_reference(tag)
        except InvalidReference:
            continue
        if ref.registry == registry and ref.repository != repository and ref.repository not in sources:
            sources.append(ref.repository)
    return sources


async def push(ctx: Context, name: str, insecure: bool, progress: TransferProgress) -> str:
    """Pushes the Store's model `name` to its registry; returns the manifest digest."""
    ref = ctx.reference(name)
    if ref.digest or not ref.tag:
        raise invalid(f"cannot push {name!r}: give a tag (repository:tag), not a digest")
    local = await ctx.store.manifest(str(ref))
    manifest = parse_model_manifest(local.raw, local.digest, f"model {ref}")
    sources = mount_sources(await ctx.store.tags_of(local.digest), ref.registry, ref.repository)
    extra = tuple(f"repository:{s}:pull" for s in sources)
    limit = asyncio.Semaphore(ctx.concurrency)
    async with ctx.client(ref, "pull,push", insecure, await ctx.login(ref), extra) as client:

        async def send(blob: Blob) -> None:
            counter = LayerCounter(blob.digest, blob.size)
            progress.watch(counter)
            async with limit:
                if await client.blob_exists(ref.repository, blob.digest):
                    counter.found(blob.size)
                    return
                counter.found(0)
                location = None
                for source in sources:
                    location = await client.start_upload(ref.repository, mount=blob.digest, source=source)
                    if location is None:  # mounted: no byte sent
                        counter.current = blob.size
                        return
                location = location or await client.start_upload(ref.repository)
                await upload_blob(client, ref.repository, location, blob, ctx.store, counter, ctx.upload_chunk)

        # Establish auth (a token with push scope) before parallel uploads, once.
        await client.blob_exists(ref.repository, manifest.config.digest)
        await run_all([send(blob) for blob in manifest.blobs])
        await client.put_manifest(ref.repository, ref.tag, local.raw, local.media_type or media_types.OCI_MANIFEST)
    return local.digest
