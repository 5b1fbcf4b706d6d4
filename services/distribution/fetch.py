"""One blob from a registry into the Store: resumed after a break, verified while it streams.

After a dropped connection (or a 5xx) the download asks the Store how many bytes it kept and
continues with an HTTP Range from there, so a break costs at most the data that was in flight.
The sha256 is computed as bytes stream; its state is checkpointed at each chunk the Store may
have kept, so a resumed stream continues the same hash. (A partial left by another process cannot
be hashed here: then the Store's own verification, which re-reads the partial, is the check.)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

import grpc
import httpx

from modelrunner.common.errors import ServiceError
from modelrunner.common.oci import Blob
from modelrunner.distribution.progress import LayerCounter
from modelrunner.distribution.registry import RegistryClient, TransferError, backoff, describe
from modelrunner.distribution.store_client import BlobSink

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_STALLED_ATTEMPTS = 6  # tries in a row that moved no byte before giving up


class _Hasher:
    """sha256 of the blob so far, restorable at every chunk boundary (about 200 bytes each)."""

    def __init__(self) -> None:
        self._at: dict[int, hashlib._Hash] = {0: hashlib.sha256()}

    def resume(self, offset: int) -> hashlib._Hash | None:
        state = self._at.get(offset)
        return state.copy() if state is not None else None

    def checkpoint(self, offset: int, state: hashlib._Hash) -> None:
        self._at[offset] = state.copy()


async def download_blob(
    client: RegistryClient, repository: str, blob: Blob, sink: BlobSink, counter: LayerCounter
) -> None:
    """Downloads `blob` into `sink` unless it is there; raises ServiceError when it cannot."""
    hasher = _Hasher()
    stalled = 0
    while True:
        state = await sink.stat(blob.digest)
        if state.exists:
            counter.found(blob.size)
            return
        offset = state.partial if state.partial <= blob.size else 0
        counter.found(offset)
        before = offset
        try:
            await _attempt(client, repository, blob, sink, counter, offset, hasher)
            counter.current = blob.size  # the Store may have found it whole before the stream's end
            return
        except ServiceError as exc:
            # The Store kept a different number of bytes than we asked about (a cancelled write was
            # still landing): ask again and resume from what it holds.
            if exc.code not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE):
                raise
            stalled = 0 if counter.current > before else stalled + 1
            if stalled >= MAX_STALLED_ATTEMPTS:
                raise
            await asyncio.sleep(backoff(stalled))
        except TransferError as exc:
            stalled = 0 if counter.current > before else stalled + 1
            if stalled >= MAX_STALLED_ATTEMPTS:
                raise client.unavailable(exc) from None
            log.info(
                "blob download broke, resuming",
                extra={"fields": {"digest": blob.digest, "at": counter.current, "error": str(exc)}},
            )
            await asyncio.sleep(backoff(stalled))


async def _attempt(
    client: RegistryClient,
    repository: str,
    blob: Blob,
    sink: BlobSink,
    counter: LayerCounter,
    offset: int,
    hasher: _Hasher,
) -> None:
    # A ServiceError here is final: open_blob's requests already retried what may pass (broken connections,
    # 5xx), and retrying a redirect loop, a bad URL or a refused token cannot help.
    response = await client.open_blob(repository, blob.digest, offset)
    try:
        skip = offset if response.status_code == 200 else 0  # the registry ignored Range
        if response.status_code == 206 and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"registry {client.registry} answered a read of {blob.digest} from byte {offset} with Content-Range "
                f"{response.headers.get('Content-Range', '(none)')[:100]!r}; nothing of it was kept",
            )
        check = _Check()
        try:
            await sink.write(blob, offset, _verified(response, blob, skip, offset, hasher, counter, check))
        except ServiceError as exc:
            if exc.code == grpc.StatusCode.DATA_LOSS and check.actual:
                raise ServiceError(
                    grpc.StatusCode.DATA_LOSS,
                    f"registry {client.registry} served blob {blob.digest} of {client.registry}/{repository} with "
                    f"digest {check.actual}; the bytes were discarded and nothing was committed",
                ) from None
            raise
        if check.actual:  # a Store that did not check: never commit what we know is wrong
            raise ServiceError(grpc.StatusCode.DATA_LOSS, f"blob {blob.digest} arrived with digest {check.actual}")
    finally:
        await response.aclose()


class _Check:
    """What the streamed bytes hashed to, when that differs from the digest (else empty)."""

    actual = ""


async def _verified(
    response: httpx.Response,
    blob: Blob,
    skip: int,
    offset: int,
    hasher: _Hasher,
    counter: LayerCounter,
    check: _Check,
) -> AsyncIterator[bytes]:
    """The body from `offset`, hashed and size-checked; a digest mismatch is noted in `check`.

    The stream still ends normally then, so the Store verifies the whole blob, finds the mismatch too
    and discards the partial (cancelling instead would keep bad bytes to resume from).
    """
    state = hasher.resume(offset)
    position = offset
    try:
        async for data in response.aiter_raw(CHUNK):
            if skip:
                cut = min(skip, len(data))
                data, skip = data[cut:], skip - cut
                if not data:
                    continue
            position += len(data)
            if position > blob.size:  # a body longer than the descriptor: its first `size` bytes are checked
                data = data[: len(data) - (position - blob.size)]
                position = blob.size
            if state is not None:
                # hashlib drops the GIL for large buffers: hashing overlaps the network and the Store.
                await asyncio.to_thread(state.update, data)
                hasher.checkpoint(position, state)
            counter.current += len(data)
            if position == blob.size and state is not None and "sha256:" + state.hexdigest() != blob.digest:
                check.actual = check.actual or "sha256:" + state.hexdigest()
            yield data
            if position == blob.size:
                break
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise TransferError(describe(exc)) from exc
    if position < blob.size:
        raise TransferError(f"connection closed after {position} of {blob.size} bytes")
