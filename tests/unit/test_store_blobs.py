"""BlobStore and ModelStore logic in process, on tmp dirs: resume, verification, locks, GC, names."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from modelrunner.common.oci import Blob, render_manifest
from modelrunner.store import blobs
from modelrunner.store.models import ModelStore

from modelrunner.common import media_types
from modelrunner.common.errors import DISK_FULL, ServiceError
from modelrunner.common.gguf_info import human_size
from modelrunner.common.names import InvalidReference

CHUNK = 1 << 16


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def chunks(data: bytes, gate: asyncio.Event | None = None):
    for i in range(0, len(data), CHUNK):
        if gate is not None and i >= len(data) // 2:
            await gate.wait()
        yield data[i : i + CHUNK]


@pytest.fixture
def store(tmp_path: Path):
    with ThreadPoolExecutor(8) as pool:
        s = ModelStore(tmp_path / "models", pool)
        s.open()
        yield s


async def test_write_verifies_and_commits(store: ModelStore):
    data = os.urandom(5 * CHUNK + 3)
    result = await store.blobs.write(digest_of(data), len(data), 0, chunks(data))
    assert not result.existed and store.layout.blob(digest_of(data)).read_bytes() == data
    assert list(store.layout.ingest.iterdir()) == []


async def test_a_short_stream_is_kept_and_resumes_rehashing_the_kept_bytes(store: ModelStore):
    data = os.urandom(8 * CHUNK)
    digest = digest_of(data)
    with pytest.raises(ServiceError) as exc:
        await store.blobs.write(digest, len(data), 0, chunks(data[: 3 * CHUNK]))
    assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION and f"offset {3 * CHUNK}" in exc.value.message
    assert store.blobs.stat(digest).partial == 3 * CHUNK
    with pytest.raises(ServiceError) as exc:
        await store.blobs.write(digest, len(data), 4 * CHUNK, chunks(data[4 * CHUNK :]))
    assert exc.value.code == grpc.StatusCode.OUT_OF_RANGE
    result = await store.blobs.write(digest, len(data), 3 * CHUNK, chunks(data[3 * CHUNK :]))
    assert not result.existed and store.blobs.stat(digest).exists


async def test_a_digest_mismatch_discards_the_bytes(store: ModelStore):
    data = os.urandom(2 * CHUNK)
    wrong = digest_of(b"other")
    with pytest.raises(ServiceError) as exc:
        await store.blobs.write(wrong, len(data), 0, chunks(data))
    assert exc.value.code == grpc.StatusCode.DATA_LOSS and digest_of(data) in exc.value.message
    assert store.blobs.stat(wrong).partial == 0 and not store.blobs.exists(wrong)


async def test_a_cancelled_stream_keeps_what_was_written_and_synced(store: ModelStore, monkeypatch):
    monkeypatch.setattr(blobs, "_SYNC_BYTES", 2 * CHUNK)
    data = os.urandom(32 * CHUNK)
    digest = digest_of(data)
    writer = asyncio.create_task(store.blobs.write(digest, len(data), 0, chunks(data, asyncio.Event())))
    await asyncio.sleep(0.2)  # the first half is received; the stream then waits forever
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    held = store.blobs.stat(digest).partial
    assert 0 < held <= len(data) // 2 and store.layout.partial(digest).read_bytes() == data[:held]
    result = await store.blobs.write(digest, len(data), held, chunks(data[held:]))
    assert not result.existed and store.layout.blob(digest).read_bytes() == data


async def test_two_writers_of_one_blob_make_one_write(store: ModelStore):
    data = os.urandom(16 * CHUNK)
    gate = asyncio.Event()
    first = asyncio.create_task(store.blobs.write(digest_of(data), len(data), 0, chunks(data, gate)))
    second = asyncio.create_task(store.blobs.write(digest_of(data), len(data), 0, chunks(data)))
    await asyncio.sleep(0.05)
    assert not second.done()  # waits on the digest's lock while the first writes
    gate.set()
    results = await asyncio.gather(first, second)
    assert [r.existed for r in results] == [False, True]


def fill_volume_after(monkeypatch, limit: int, code: int) -> None:
    """The volume fills when a partial upload holds `limit` bytes: its next write fails with `code`."""
    write = blobs._Ingest.write

    def limited(self, batch) -> None:
        for chunk in batch:
            if self.size >= limit:
                raise OSError(code, os.strerror(code))
            write(self, [chunk])

    monkeypatch.setattr(blobs._Ingest, "write", limited)


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "the disk quota is used up"), (errno.EFBIG, "file size limit"),
])
async def test_a_write_the_volume_has_no_room_for_keeps_nothing_and_says_what_it_needed(
    store: ModelStore, monkeypatch, code: int, words: str
):
    """The partial goes: kept on a full volume, it would hold the last free bytes, and the rewrite of
    index.json that deleting a model needs (to free space) would fail too."""
    kept = await add_model(store, ["ai/kept"], [b"weights"], "llama")
    fill_volume_after(monkeypatch, 4 * CHUNK, code)
    data = os.urandom(16 * CHUNK)
    digest = digest_of(data)
    with pytest.raises(ServiceError) as exc:
        await store.blobs.write(digest, len(data), 0, chunks(data))
    assert exc.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and exc.value.reason == DISK_FULL
    message = exc.value.message
    assert words in message and digest in message and human_size(len(data)) in message, message
    assert f"the {human_size(4 * CHUNK)} written were discarded" in message, message
    assert list(store.layout.ingest.iterdir()) == [] and not store.blobs.exists(digest)
    assert [m.id for m in store.list_models()] == [kept]
    assert (await store.delete("ai/kept", force=False))[-1].deleted == kept
    monkeypatch.undo()
    assert not (await store.blobs.write(digest, len(data), 0, chunks(data))).existed


@pytest.mark.parametrize(("free", "advice"), [
    (1_000_000, "1.00 MB are free: free at least 9.00 MB more (`modelrunner rm` a model) and try again"),
    (20_000_000, "20.00 MB are free: other writes held the rest: try again"),
])
def test_no_room_says_how_much_more_to_free(free: int, advice: str):
    no_space = OSError(errno.ENOSPC, "No space left on device")
    message = blobs.no_room_message("sha256:" + "a" * 64, 10_000_000, 4_000_000, free, no_space)
    assert message.startswith(f"blob sha256:{'a' * 64} (10.00 MB) does not fit on the models volume: the disk is full")
    assert message.endswith(f"the 4.00 MB written were discarded and {advice}"), message


def model_bytes(store_layers: list[bytes], arch: str) -> tuple[bytes, list[bytes]]:
    config = json.dumps({"config": {"architecture": arch}}).encode()
    manifest = render_manifest(
        Blob(media_types.MODEL_CONFIG, digest_of(config), len(config)),
        [Blob(media_types.GGUF, digest_of(x), len(x)) for x in store_layers],
    )
    return manifest, [config, *store_layers]


async def add_model(store: ModelStore, tags: list[str], layers: list[bytes], arch: str) -> str:
    manifest, blobs = model_bytes(layers, arch)
    for blob in blobs:
        await store.blobs.put_bytes(blob)
    return await store.put_manifest(manifest, tags)


async def test_names_resolve_by_tag_id_and_prefix(store: ModelStore):
    model = await add_model(store, ["gemma3"], [b"weights"], "gemma3")
    assert store.resolve("ai/gemma3") == (model, "docker.io/ai/gemma3:latest")
    assert store.resolve("docker.io/ai/gemma3:latest")[0] == model
    assert store.resolve(model) == (model, model)
    assert store.resolve(model[:15])[0] == model
    assert store.resolve(model[7:19])[0] == model
    assert store.resolve(f"ai/gemma3@{model}")[0] == model
    with pytest.raises(ServiceError) as exc:
        store.resolve("ai/other")
    assert exc.value.code == grpc.StatusCode.NOT_FOUND and "modelrunner pull ai/other:latest" in exc.value.message
    for bad in ["../x", "/abs", "x\0y", "a" * 256, "Ai/../../x"]:
        with pytest.raises(InvalidReference):
            store.resolve(bad)


async def test_moving_the_last_tag_removes_the_old_model_and_only_its_own_blobs(store: ModelStore):
    shared = b"shared weights"
    old = await add_model(store, ["ai/m"], [shared, b"old only"], "old")
    new = await add_model(store, ["ai/m"], [shared], "new")
    assert list(store.index.models()) == [new]
    assert not store.blobs.exists(old) and not store.blobs.exists(digest_of(b"old only"))
    assert store.blobs.exists(digest_of(shared))


async def test_put_manifest_checks_blobs_inside_the_index_lock(store: ModelStore):
    manifest, blobs = model_bytes([b"layer"], "x")
    await store.blobs.put_bytes(blobs[0])
    with pytest.raises(ServiceError) as exc:
        await store.put_manifest(manifest, ["ai/x"])
    assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION and digest_of(b"layer") in exc.value.message
    assert store.index.entries == ()
