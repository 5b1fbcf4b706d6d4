"""Blobs: streamed in, hashed while written, verified, fsynced, then renamed into place.

A write appends to `ingest/<hex>` and only a verified blob is renamed to `blobs/sha256/<hex>`, so a
crash leaves at most a partial upload, which the next writer resumes (StatBlob says from where). A write
the volume has no room for discards its partial instead (RESOURCE_EXHAUSTED, saying how much it needed):
kept, it would hold the last free bytes, and even a delete, which rewrites index.json, would fail.
Writes of one digest are serialised by a per-digest lock: two writers of the same blob make one
write, and the second finds it complete. Disk work runs in a thread pool so many streams proceed at
once; what a stream receives while one batch of chunks is hashed (one thread) and written (another)
is the next batch, and the file is flushed in the background as it grows, so the final fsync is short.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from modelrunner.store.layout import Layout, check_digest, fsync_dir

from modelrunner.common.errors import ServiceError, disk_full, invalid, no_space, not_found
from modelrunner.common.gguf_info import human_size

Data = bytes | memoryview  # a chunk of a blob as received (a view of the gRPC message)

READ_CHUNK = 1 << 20
_HASH_CHUNK = 8 << 20
# Bytes a stream receives ahead of its hashing and writing: one pool hop then carries many chunks.
_AHEAD_BYTES = 16 << 20
# A blob's bytes are flushed to disk in the background every _SYNC_BYTES while the stream goes on,
# so the final fsync waits for the last few MiB rather than for the whole blob.
_SYNC_BYTES = 64 << 20
_datasync = getattr(os, "fdatasync", os.fsync)
# A blob written or found by a writer is kept from garbage collection this long, so a pull's layers
# survive until its manifest (which then references them) is committed.
LEASE_SECONDS = 3600.0


@dataclass(frozen=True)
class BlobStat:
    exists: bool
    size: int
    partial: int


@dataclass(frozen=True)
class WriteResult:
    digest: str
    size: int
    existed: bool


def no_room_message(digest: str, size: int, written: int, free: int, exc: OSError) -> str:
    """What a write that ran out of room tells its writer: the blob's size, what is free, what to do."""
    what = f"blob {digest} ({human_size(size)}) does not fit on the models volume: {no_space(exc)} ({exc.strerror})"
    done = f"the {human_size(written)} written were discarded"
    if exc.errno == errno.EFBIG:
        return f"{what}; {done}: raise the Store's file size limit or use a filesystem that takes files this large"
    if size > free:
        advice = f"free at least {human_size(size - free)} more (`modelrunner rm` a model) and try again"
    else:
        advice = "other writes held the rest: try again"
    return f"{what}; {done} and {human_size(free)} are free: {advice}"


class _Ingest:
    """One partial upload: appends to ingest/<hex> and hashes what it appends."""

    def __init__(self, path: Path, offset: int, executor: Executor) -> None:
        self.path = path
        self.hash = hashlib.sha256()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(self.fd, offset)
            self._rehash(offset)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = offset
        self._executor = executor
        self._synced = offset
        self._sync: Future | None = None

    def _rehash(self, length: int) -> None:
        """Hashes the bytes a previous writer left, once, so the stream continues the same digest."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        left = length
        while left:
            data = os.read(self.fd, min(_HASH_CHUNK, left))
            if not data:
                raise OSError(f"partial upload {self.path.name} is shorter than {length} bytes")
            self.hash.update(data)
            left -= len(data)

    def update_hash(self, chunks: list[Data]) -> None:
        for chunk in chunks:
            self.hash.update(chunk)

    def write(self, chunks: list[Data]) -> None:
        """Appends `chunks` (hash them with update_hash, in order); every _SYNC_BYTES, starts an
        fdatasync in the pool unless the last one still runs."""
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view) :]
            self.size += len(chunk)
        if self.size - self._synced >= _SYNC_BYTES and (self._sync is None or self._sync.done()):
            self._settle_sync()
            self._sync = self._executor.submit(_datasync, self.fd)
            self._synced = self.size

    def _settle_sync(self) -> None:
        """Drops the background sync if it has not started (the pool may be full of our callers), else
        waits for it and raises its error (which a later fsync of this fd would not report)."""
        sync, self._sync = self._sync, None
        if sync is not None and not sync.cancel():
            sync.result()

    def finish(self) -> str:
        """Fsyncs and closes the file; returns the digest of everything written."""
        self._settle_sync()
        os.fsync(self.fd)
        self.close()
        return "sha256:" + self.hash.hexdigest()

    def close(self) -> None:
        """Closes the file, after the background sync (never under it); ignores its error."""
        try:
            self._settle_sync()
        except OSError:
            pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BlobStore:
    """The blobs of one layout: stat, write (resumable), read, remove."""

    def __init__(self, layout: Layout, executor: ThreadPoolExecutor) -> None:
        self.layout = layout
        self.executor = executor
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._leases: dict[str, float] = {}

    def _run(self, fn, *args) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def lock(self, digest: str) -> asyncio.Lock:
        lock = self._locks.get(digest)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[digest] = lock
        return lock

    def busy(self, digest: str) -> bool:
        lock = self._locks.get(digest)
        return lock is not None and lock.locked()

    # Leases keep blobs a writer just wrote or found from being collected before a manifest uses them.
    def lease(self, digest: str) -> None:
        self._leases[digest] = time.monotonic()

    def release(self, digests: Iterable[str]) -> None:
        for d in digests:
            self._leases.pop(d, None)

    def leased(self) -> set[str]:
        now = time.monotonic()
        for d in [d for d, t in self._leases.items() if now - t > LEASE_SECONDS]:
            del self._leases[d]
        return set(self._leases)

    def _size(self, path: Path) -> int | None:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None

    def exists(self, digest: str) -> bool:
        return self.layout.blob(digest).is_file()

    def stat(self, digest: str) -> BlobStat:
        size = self._size(self.layout.blob(digest))
        if size is not None:
            return BlobStat(True, size, 0)
        return BlobStat(False, 0, self._size(self.layout.partial(digest)) or 0)

    async def write(self, digest: str, size: int, offset: int, chunks: AsyncIterator[Data]) -> WriteResult:
        """Writes the blob from `offset` with the data of `chunks`.

        `offset` must equal the bytes of the partial upload held (StatBlob), or be 0 to start again.
        A stream that ends short keeps its bytes for a resume; too many bytes, a digest mismatch or a
        volume without room for them (RESOURCE_EXHAUSTED, reason disk_full) discards them.
        """
        check_digest(digest)
        if size < 0 or offset < 0 or offset > size:
            raise invalid(f"blob {digest}: offset {offset} and size {size} must satisfy 0 <= offset <= size")
        async with self.lock(digest):
            existing = self._size(self.layout.blob(digest))
            if existing is not None:
                if existing != size:
                    raise invalid(f"blob {digest} is stored with size {existing}, but the writer declared {size}")
                self.lease(digest)
                return WriteResult(digest, size, True)
            partial_path = self.layout.partial(digest)
            held = self._size(partial_path) or 0
            if offset not in (0, held):
                code = grpc.StatusCode.OUT_OF_RANGE if offset > held else grpc.StatusCode.FAILED_PRECONDITION
                raise ServiceError(
                    code,
                    f"blob {digest}: the write starts at offset {offset}, but the Store holds {held} bytes "
                    f"of it: resume at offset {held} (StatBlob) or start again at 0",
                )
            try:
                await self._store(partial_path, digest, size, offset, chunks)
            except OSError as exc:
                if not no_space(exc):
                    raise
                raise await self._run(self._no_room, exc, digest, size) from None
            self.lease(digest)
            return WriteResult(digest, size, False)

    async def _store(
        self, partial_path: Path, digest: str, size: int, offset: int, chunks: AsyncIterator[Data]
    ) -> None:
        """Appends the stream to the partial upload, verifies the whole and renames it into place."""
        ingest = await self._run(_Ingest, partial_path, offset, self.executor)
        try:
            await self._receive(ingest, digest, size, chunks)
            actual = await self._run(ingest.finish)
        finally:
            await self._run(ingest.close)
        if actual != digest:
            await self._run(partial_path.unlink, True)
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS,
                f"blob {digest}: the {size} bytes received have digest {actual}; they were discarded, "
                "write the blob again",
            )
        await self._run(self._commit, partial_path, digest)

    def _no_room(self, exc: OSError, digest: str, size: int) -> ServiceError:
        """Discards the partial upload of a write the volume had no room for; the error says how much
        the blob needs against what is free once it is gone."""
        written = self._unlink(self.layout.partial(digest)) or 0
        free = shutil.disk_usage(self.layout.ingest).free
        return disk_full(no_room_message(digest, size, written, free, exc))

    async def _receive(self, ingest: _Ingest, digest: str, size: int, chunks: AsyncIterator[Data]) -> None:
        """Appends the stream to `ingest`: while one batch of chunks is hashed (one thread) and written
        (another), the next batch is received, up to _AHEAD_BYTES."""
        received = ingest.size
        batch: list[Data] = []
        batched = 0
        pending: asyncio.Future | None = None
        try:
            async for data in chunks:
                received += len(data)
                if received > size:
                    if pending:
                        await asyncio.shield(pending)
                    await self._run(ingest.close)
                    await self._run(ingest.path.unlink, True)
                    raise invalid(
                        f"blob {digest}: the writer declared {size} bytes but sent more ({received}); "
                        "the bytes were discarded"
                    )
                batch.append(data)
                batched += len(data)
                if pending is None or pending.done() or batched >= _AHEAD_BYTES:
                    if pending:
                        await asyncio.shield(pending)
                    pending = asyncio.ensure_future(self._append(ingest, batch))
                    batch, batched = [], 0
            if pending:
                await asyncio.shield(pending)
            if batch:
                pending = asyncio.ensure_future(self._append(ingest, batch))
                await asyncio.shield(pending)
        finally:
            # Never close the file under a write still running in the pool (cancelled stream).
            if pending and not pending.done():
                await asyncio.wait([pending])
        if received < size:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"blob {digest}: the stream ended after {received} of {size} bytes; they are kept, "
                f"resume at offset {received}",
            )

    async def _append(self, ingest: _Ingest, batch: list[Data]) -> None:
        """Hashes `batch` in one thread and writes it in another; returns when both are done."""
        jobs = [self._run(ingest.update_hash, batch), self._run(ingest.write, batch)]
        await asyncio.wait(jobs)
        for job in jobs:
            job.result()

    def _commit(self, path: Path, digest: str) -> None:
        os.replace(path, self.layout.blob(digest))
        fsync_dir(self.layout.blobs)
        fsync_dir(self.layout.ingest)

    async def put_bytes(self, data: bytes) -> str:
        """Stores small content (a manifest, a config) as a blob; returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        async with self.lock(digest):
            if not self.exists(digest):
                await self._run(self.layout.write_atomic, self.layout.blob(digest), data)
            self.lease(digest)
        return digest

    async def read_bytes(self, digest: str) -> bytes:
        try:
            return await self._run(self.layout.blob(digest).read_bytes)
        except FileNotFoundError:
            raise not_found(f"blob {digest} is not in the store") from None

    async def read(self, digest: str, offset: int) -> AsyncIterator[bytes]:
        """The blob's bytes from `offset`, in 1 MiB chunks."""
        path = self.layout.blob(digest)
        try:
            f = await self._run(open, path, "rb", 0)
        except FileNotFoundError:
            raise not_found(f"blob {digest} is not in the store") from None
        try:
            size = os.fstat(f.fileno()).st_size
            if not 0 <= offset <= size:
                raise ServiceError(
                    grpc.StatusCode.OUT_OF_RANGE, f"offset {offset} is outside blob {digest} of {size} bytes"
                )
            f.seek(offset)
            while data := await self._run(f.read, READ_CHUNK):
                yield data
        finally:
            f.close()

    async def remove(
        self, digests: Iterable[str], *, keep: set[str] | frozenset[str] = frozenset(), leases: bool = True
    ) -> tuple[int, int]:
        """Removes the blobs, skipping `keep` and (if `leases`) leased ones; returns (count, bytes)."""
        count = reclaimed = 0
        for digest in digests:
            async with self.lock(digest):
                if digest in keep or (leases and digest in self.leased()):
                    continue
                size = await self._run(self._unlink, self.layout.blob(digest))
                if size is not None:
                    count += 1
                    reclaimed += size
        if count:
            await self._run(fsync_dir, self.layout.blobs)
        return count, reclaimed

    async def remove_partials(self) -> tuple[int, int]:
        """Removes partial uploads no writer is using; returns (count, bytes)."""
        count = reclaimed = 0
        for path in await self._run(self.layout.partials):
            digest = f"sha256:{path.name}"
            if self.busy(digest):
                continue
            async with self.lock(digest):
                size = await self._run(self._unlink, path)
            if size is not None:
                count += 1
                reclaimed += size
        return count, reclaimed

    @staticmethod
    def _unlink(path: Path) -> int | None:
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return None

    def disk_usage(self) -> int:
        return sum(p.stat().st_size for p in self.layout.blobs.iterdir() if p.is_file())
