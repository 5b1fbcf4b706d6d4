"""Pull: resolve a reference to a model manifest, fetch the blobs the Store lacks, then commit.

The manifest is committed only after every blob is in the Store and verified, so a failed pull
leaves no model behind (at most partial blobs, which the next pull resumes). A blob the pull found in
the Store but a delete collected before the commit is fetched again, and the commit retried.
"""

from __future__ import annotations

import asyncio

import grpc

from modelrunner.common.errors import DISK_FULL, ServiceError, disk_full
from modelrunner.common.gguf_info import human_size
from modelrunner.common.names import Reference
from modelrunner.common.oci import Blob
from modelrunner.distribution.context import Context
from modelrunner.distribution.credentials import Credentials
from modelrunner.distribution.fetch import download_blob
from modelrunner.distribution.manifests import (
    INDEXES,
    MANIFESTS,
    ModelManifest,
    media_type_of,
    parse_model_manifest,
    pick_from_index,
)
from modelrunner.distribution.progress import LayerCounter, TransferProgress
from modelrunner.distribution.registry import RegistryClient
from modelrunner.distribution.tasks import run_all

COMMIT_ATTEMPTS = 3  # fetches of what the Store lacks, each followed by a commit


async def resolve(client: RegistryClient, ref: Reference) -> ModelManifest:
    """The model manifest `ref` names, through an index if it names one."""
    what = f"model {ref}"
    data = await client.get_manifest(ref.repository, ref.digest or ref.tag or "latest")
    media_type = media_type_of(data.raw, data.media_type, what)
    if media_type in INDEXES:
        data = await client.get_manifest(ref.repository, pick_from_index(data.raw, what))
        media_type = media_type_of(data.raw, data.media_type, what)
    if media_type not in MANIFESTS:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{what} is a {media_type or 'document of unknown type'}, not a model manifest"
        )
    return parse_model_manifest(data.raw, data.digest, what)


async def pull(ctx: Context, name: str, insecure: bool, progress: TransferProgress) -> str:
    """Pulls `name` into the Store; returns the model id."""
    ref = ctx.reference(name)
    login = await ctx.login(ref)
    async with ctx.client(ref, "pull", insecure, login) as client:
        manifest = await resolve(client, ref)
    tags = [str(ref.with_tag(ref.tag))] if ref.tag else []
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        await _fetch_missing(ctx, ref, insecure, login, manifest, progress)
        try:
            return await ctx.store.commit(manifest.raw, tags)
        except ServiceError as exc:
            # A blob found in the Store was collected before the commit (a delete of the model raced
            # this pull): the Store refuses the manifest, and fetching the blob again makes it whole.
            if exc.code != grpc.StatusCode.FAILED_PRECONDITION or attempt == COMMIT_ATTEMPTS:
                raise


async def _fetch_missing(
    ctx: Context, ref: Reference, insecure: bool, login: Credentials | None, manifest: ModelManifest,
    progress: TransferProgress,
) -> None:
    """Downloads the manifest's blobs the Store lacks; a full disk says what the whole pull needs."""
    missing: list[Blob] = []
    for blob in manifest.blobs:
        if (await ctx.store.stat(blob.digest)).exists:
            counter = LayerCounter(blob.digest, blob.size)
            counter.found(blob.size)
            progress.watch(counter)
        else:
            missing.append(blob)
    limit = asyncio.Semaphore(ctx.concurrency)

    async def fetch(blob: Blob) -> None:
        async with limit:
            async def start(counter: LayerCounter) -> None:
                async with ctx.client(ref, "pull", insecure, login) as own:
                    await download_blob(own, ref.repository, blob, ctx.store, counter)

            await ctx.downloads.run(blob, start, progress.watch)

    try:
        await run_all([fetch(blob) for blob in missing])
    except ServiceError as exc:
        if exc.reason != DISK_FULL:
            raise
        needed = human_size(sum(blob.size for blob in missing))
        message = f"{exc.message}. Pulling {ref.familiar} needs {needed} for the layers the store lacked"
        raise disk_full(message) from None
