"""BlobStore and ModelStore logic in process, on tmp dirs: resume, verification, locks, GC, names."""

from __future__ import annotations

import asyncio
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
from modelrunner.common.errors import ServiceError
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
