"""The Store as a real process on a free port, over gRPC, with real files."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mmap
import os
import signal
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from modelrunner.v1 import store_pb2, store_pb2_grpc

from modelrunner.common import media_types
from tests.support.registry import ServiceProcess

CHUNK = 1 << 20


class StoreProcess(ServiceProcess):
    """`python -m modelrunner.store` on 127.0.0.1, with MODELRUNNER_MODELS_DIR set to `models_dir`."""

    def __init__(self, models_dir: Path) -> None:
        super().__init__("modelrunner.store", {"MODELRUNNER_MODELS_DIR": str(models_dir)}, models_dir.parent)
        self.models_dir = models_dir

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def channel(self) -> grpc.aio.Channel:
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        return grpc.aio.insecure_channel(self.addr, options=opts)

    @contextlib.asynccontextmanager
    async def reconnected(self) -> AsyncIterator[grpc.aio.Channel]:
        """A channel after a restart on the same port. gRPC shares subchannels between channels of one
        process, so a new channel can inherit the killed server's connection backoff and fail its first
        call with "Connection refused"; waiting until it is ready avoids that."""
        async with self.channel() as ch:
            await asyncio.wait_for(ch.channel_ready(), 20)
            yield ch


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def blob_stream(digest: str, size: int, offset: int, data: bytes) -> AsyncIterator[store_pb2.WriteBlobRequest]:
    yield store_pb2.WriteBlobRequest(header=store_pb2.BlobHeader(digest=digest, size=size, offset=offset))
    view = memoryview(data)
    for i in range(0, len(view), CHUNK):
        yield store_pb2.WriteBlobRequest(data=bytes(view[i : i + CHUNK]))


async def write_blob(stub, data: bytes, offset: int = 0, digest: str | None = None) -> store_pb2.WriteBlobResponse:
    return await stub.WriteBlob(blob_stream(digest or digest_of(data), len(data), offset, data[offset:]))


def manifest_for(config: bytes, layers: list[bytes]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_MANIFEST,
        "config": {"mediaType": media_types.MODEL_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": media_types.GGUF, "digest": digest_of(x), "size": len(x)} for x in layers],
    }
    return json.dumps(doc).encode()


def config_bytes(arch: str = "llama") -> bytes:
    return json.dumps(
        {"config": {"format": "gguf", "architecture": arch}, "descriptor": {"created": "2025-01-01T00:00:00Z"}}
    ).encode()


async def put_model(stub, tags: list[str], layers: list[bytes], arch: str = "llama"):
    config = config_bytes(arch)
    for blob in [config, *layers]:
        await write_blob(stub, blob)
    return await stub.PutManifest(store_pb2.PutManifestRequest(manifest=manifest_for(config, layers), tags=tags))


async def uploaded(stub, path: Path) -> store_pb2.PackageFile:
    """`path` written into the Store as a blob (as the CLI uploads it), named for PackageModel."""
    data = path.read_bytes()
    await write_blob(stub, data)
    return store_pb2.PackageFile(digest=digest_of(data), name=path.name)


async def package(stub, gguf: Path, name: str, **fields) -> object:
    return await stub.PackageModel(store_pb2.PackageModelRequest(gguf=[await uploaded(stub, gguf)], name=name, **fields))


@pytest.fixture
def store(tmp_path: Path):
    proc = StoreProcess(tmp_path / "models").start()
    yield proc
    proc.stop()


@pytest.fixture
async def stub(store: StoreProcess):
    async with store.channel() as ch:
        yield store_pb2_grpc.StoreStub(ch)


def code_of(exc: pytest.ExceptionInfo) -> grpc.StatusCode:
    return exc.value.code()


async def test_package_list_resolve_and_skopeo_reads_the_layout(stub, store, tiny_gguf: Path, tmp_path: Path):
    template = tmp_path / "template.jinja"
    template.write_text("{{ messages }}")
    license_ = tmp_path / "LICENSE"
    license_.write_text("Apache-2.0")
    model = await package(
        stub, tiny_gguf, "tiny:v1", license=await uploaded(stub, license_), chat_template=await uploaded(stub, template),
        context_size=256,
    )
    assert model.tags == ["docker.io/ai/tiny:v1"]
    assert model.config.architecture == "llama" and model.config.context_size == 256
    assert model.size == tiny_gguf.stat().st_size + len("Apache-2.0") + len("{{ messages }}")

    listed = await stub.ListModels(store_pb2.ListModelsRequest())
    assert [m.id for m in listed.models] == [model.id]
    resolved = await stub.ResolveModel(store_pb2.ResolveModelRequest(name="ai/tiny:v1"))
    assert resolved.reference == "docker.io/ai/tiny:v1"
    assert Path(resolved.gguf_paths[0]).read_bytes() == tiny_gguf.read_bytes()
    assert resolved.chat_template == "{{ messages }}"
    assert Path(resolved.license_path).read_text() == "Apache-2.0"
    by_prefix = await stub.GetModel(store_pb2.GetModelRequest(name=model.id[:19]))
    assert by_prefix.id == model.id

    raw = subprocess.run(
        ["/usr/bin/skopeo", "inspect", "--raw", f"oci:{store.models_dir}:docker.io/ai/tiny:v1"],
        check=True,
        capture_output=True,
    ).stdout
    assert digest_of(raw) == model.id
    manifest = await stub.GetManifest(store_pb2.GetManifestRequest(name="ai/tiny:v1"))
    assert manifest.manifest == raw and manifest.digest == model.id


async def test_write_read_stat_and_manifest_checks(stub):
    data = os.urandom(3 * CHUNK + 123)
    digest = digest_of(data)
    assert not (await stub.StatBlob(store_pb2.StatBlobRequest(digest=digest))).exists
    written = await write_blob(stub, data)
    assert (written.digest, written.size, written.existed) == (digest, len(data), False)
    again = await write_blob(stub, data)
    assert again.existed
    stat = await stub.StatBlob(store_pb2.StatBlobRequest(digest=digest))
    assert stat.exists and stat.size == len(data)
    chunks = [c.data async for c in stub.ReadBlob(store_pb2.ReadBlobRequest(digest=digest, offset=CHUNK + 5))]
    assert b"".join(chunks) == data[CHUNK + 5 :] and max(len(c) for c in chunks) == CHUNK

    missing = os.urandom(100)
    config = config_bytes()
    await write_blob(stub, config)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.PutManifest(store_pb2.PutManifestRequest(manifest=manifest_for(config, [data, missing]), tags=["x"]))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION and digest_of(missing) in exc.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.PutManifest(store_pb2.PutManifestRequest(manifest=b"{not json", tags=["x"]))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    model = await stub.PutManifest(store_pb2.PutManifestRequest(manifest=manifest_for(config, [data]), tags=["x"]))
    assert model.tags == ["docker.io/ai/x:latest"] and model.size == len(data)


async def test_bad_digests_sizes_and_names_are_rejected(stub, store):
    data = os.urandom(CHUNK + 7)
    wrong = digest_of(b"something else")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await write_blob(stub, data, digest=wrong)
    assert code_of(exc) == grpc.StatusCode.DATA_LOSS and wrong in exc.value.details()
    assert (await stub.StatBlob(store_pb2.StatBlobRequest(digest=wrong))).partial == 0

    async def too_much():
        yield store_pb2.WriteBlobRequest(header=store_pb2.BlobHeader(digest=digest_of(data), size=10))
        yield store_pb2.WriteBlobRequest(data=data)

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.WriteBlob(too_much())
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT

    for bad in ["../../etc/passwd", "/etc/passwd", "ai/x\0y", "a" * 300, "UPPER/..", "ai/x:../../y", "sha256:zz"]:
        for call in (
            stub.GetModel(store_pb2.GetModelRequest(name=bad)),
            stub.ResolveModel(store_pb2.ResolveModelRequest(name=bad)),
            stub.DeleteModel(store_pb2.DeleteModelRequest(name=bad)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call
            assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT, bad
    for bad_digest in ["sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.StatBlob(store_pb2.StatBlobRequest(digest=bad_digest))
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetModel(store_pb2.GetModelRequest(name="ai/absent"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND and "modelrunner pull ai/absent:latest" in exc.value.details()
    assert list(store.models_dir.joinpath("blobs", "sha256").iterdir()) == []
    assert [p for p in store.models_dir.joinpath("ingest").iterdir()] == []


async def test_tag_delete_and_garbage_collection(stub, store):
    shared, own = os.urandom(2000), os.urandom(3000)
    a = await put_model(stub, ["ai/a"], [shared, own], arch="a")
    b = await put_model(stub, ["ai/b"], [shared], arch="b")
    tagged = await stub.TagModel(store_pb2.TagModelRequest(source="ai/a", repo="team/a", tag="v2"))
    assert tagged.tag == "docker.io/team/a:v2" and sorted(tagged.model.tags) == [
        "docker.io/ai/a:latest",
        "docker.io/team/a:v2",
    ]

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.DeleteModel(store_pb2.DeleteModelRequest(name=a.id))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION and "force" in exc.value.details()

    untag = await stub.DeleteModel(store_pb2.DeleteModelRequest(name="team/a:v2"))
    assert [(x.untagged, x.deleted) for x in untag.actions] == [("docker.io/team/a:v2", "")]
    gone = await stub.DeleteModel(store_pb2.DeleteModelRequest(name="ai/a"))
    assert [(x.untagged, x.deleted) for x in gone.actions] == [("docker.io/ai/a:latest", ""), ("", a.id)]
    blobs = store.models_dir / "blobs" / "sha256"
    assert not (blobs / digest_of(own)[7:]).exists() and (blobs / digest_of(shared)[7:]).exists()
    resolved = await stub.ResolveModel(store_pb2.ResolveModelRequest(name="ai/b"))
    assert resolved.id == b.id

    usage = await stub.DiskUsage(store_pb2.DiskUsageRequest())
    assert usage.models_disk_usage == sum(p.stat().st_size for p in blobs.iterdir())
    await write_blob(stub, os.urandom(500))  # leased: a pull's blob waiting for its manifest
    pruned = await stub.Prune(store_pb2.PruneRequest())
    assert pruned.removed_blobs == 0
    purged = await stub.PurgeModels(store_pb2.PurgeModelsRequest())
    assert purged.deleted_models == 1
    assert (await stub.ListModels(store_pb2.ListModelsRequest())).models == []


async def test_tagging_onto_another_models_last_tag_keeps_that_model_by_id(stub, store):
    a = await put_model(stub, ["ai/a"], [os.urandom(1000)], arch="a")
    own = os.urandom(2000)
    b = await put_model(stub, ["ai/b"], [own], arch="b")
    await stub.TagModel(store_pb2.TagModelRequest(source="ai/a", repo="ai/b"))

    listed = {m.id: list(m.tags) for m in (await stub.ListModels(store_pb2.ListModelsRequest())).models}
    assert listed == {a.id: ["docker.io/ai/a:latest", "docker.io/ai/b:latest"], b.id: []}
    resolved = await stub.ResolveModel(store_pb2.ResolveModelRequest(name=b.id))
    assert resolved.id == b.id and all(Path(p).exists() for p in resolved.gguf_paths)
    assert (store.models_dir / "blobs" / "sha256" / digest_of(own)[7:]).exists()

    gone = await stub.DeleteModel(store_pb2.DeleteModelRequest(name=b.id))
    assert [(x.untagged, x.deleted) for x in gone.actions] == [("", b.id)]
    assert not (store.models_dir / "blobs" / "sha256" / digest_of(own)[7:]).exists()


async def test_delete_while_the_blob_is_mapped_keeps_the_reader_and_reclaims_space(stub, store, tiny_gguf):
    model = await package(stub, tiny_gguf, "ai/mapped")
    path = Path((await stub.ResolveModel(store_pb2.ResolveModelRequest(name="ai/mapped"))).gguf_paths[0])
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        await stub.DeleteModel(store_pb2.DeleteModelRequest(name=model.id))
        assert not path.exists()
        assert os.fstat(f.fileno()).st_nlink == 0  # unlinked: the kernel frees it at the last close
        assert mapped[:4] == b"GGUF" and len(mapped[:]) == tiny_gguf.stat().st_size
    assert (await stub.DiskUsage(store_pb2.DiskUsageRequest())).models_disk_usage == 0


async def test_concurrent_writers_with_overlapping_blobs_while_readers_list_and_resolve(stub, store, tiny_gguf):
    await package(stub, tiny_gguf, "ai/base")
    blobs = [os.urandom(2 * CHUNK + i) for i in range(4)]
    config = config_bytes()
    stop = asyncio.Event()

    async def writer(i: int):
        results = [await write_blob(stub, blobs[(i + k) % 4]) for k in range(2)]
        results.append(await write_blob(stub, config))
        layers = [blobs[i % 4], blobs[(i + 1) % 4]]
        await stub.PutManifest(store_pb2.PutManifestRequest(manifest=manifest_for(config, layers), tags=[f"ai/m{i}"]))
        return results

    async def reader():
        count = 0
        while not stop.is_set():
            listed = await stub.ListModels(store_pb2.ListModelsRequest())
            assert listed.models
            resolved = await stub.ResolveModel(store_pb2.ResolveModelRequest(name="ai/base"))
            assert Path(resolved.gguf_paths[0]).stat().st_size == tiny_gguf.stat().st_size
            count += 1
        return count

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    results = await asyncio.gather(*(writer(i) for i in range(16)))
    stop.set()
    assert all(n > 0 for n in await asyncio.gather(*readers))
    fresh = [r for rs in results for r in rs if not r.existed]
    assert len(fresh) == 5  # each distinct blob written once, every other writer found it
    listed = await stub.ListModels(store_pb2.ListModelsRequest())
    assert len(listed.models) == 1 + 4  # 16 tags over 4 distinct manifests, plus the base
    for i in range(16):
        resolved = await stub.ResolveModel(store_pb2.ResolveModelRequest(name=f"ai/m{i}"))
        assert [Path(p).read_bytes() for p in resolved.gguf_paths] == [blobs[i % 4], blobs[(i + 1) % 4]]
    assert list((store.models_dir / "ingest").iterdir()) == []


async def test_a_model_with_a_missing_blob_is_reported_broken(tmp_path, tiny_gguf):
    proc = StoreProcess(tmp_path / "models").start()
    try:
        async with proc.channel() as ch:
            model = await package(store_pb2_grpc.StoreStub(ch), tiny_gguf, "ai/broken")
            gguf = (
                await store_pb2_grpc.StoreStub(ch).ResolveModel(store_pb2.ResolveModelRequest(name="ai/broken"))
            ).gguf_paths[0]
        proc.stop()
        Path(gguf).unlink()
        proc.start()
        async with proc.reconnected() as ch:
            stub = store_pb2_grpc.StoreStub(ch)
            assert [m.id for m in (await stub.ListModels(store_pb2.ListModelsRequest())).models] == [model.id]
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.ResolveModel(store_pb2.ResolveModelRequest(name="ai/broken"))
            assert code_of(exc) == grpc.StatusCode.DATA_LOSS and Path(gguf).name in exc.value.details()
        assert "missing" in proc.log.read_text()
    finally:
        proc.stop()


async def test_two_writers_of_one_large_blob_both_succeed_with_one_write(stub, store):
    data = os.urandom(48 * CHUNK)
    results = await asyncio.gather(write_blob(stub, data), write_blob(stub, data))
    assert sorted(r.existed for r in results) == [False, True]
    assert (store.models_dir / "blobs" / "sha256" / digest_of(data)[7:]).read_bytes() == data
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in stub.ReadBlob(store_pb2.ReadBlobRequest(digest=digest_of(data), offset=len(data) + 1)):
            pass
    assert code_of(exc) == grpc.StatusCode.OUT_OF_RANGE


@pytest.mark.slow
async def test_packaging_the_253mb_gemma_takes_seconds(stub, gemma_gguf: Path):
    start = time.monotonic()
    gguf = await uploaded(stub, gemma_gguf)
    sent = time.monotonic()
    model = await stub.PackageModel(store_pb2.PackageModelRequest(gguf=[gguf], name="ai/gemma3"))
    elapsed = time.monotonic() - sent
    assert elapsed < 10, f"packaging the uploaded blob took {elapsed:.1f} s"
    assert model.config.architecture == "gemma3" and model.config.quantization == "Q4_K_M"
    assert model.config.parameters == "268.10 M" and model.config.context_size == 32768
    resolved = await stub.ResolveModel(store_pb2.ResolveModelRequest(name="ai/gemma3"))
    assert resolved.layers[0].digest.startswith("sha256:a5fd3b62")
    print(f"uploaded 253 MB in {sent - start:.2f} s, packaged it in {elapsed:.2f} s")


def _hostile_header(tmp_path: Path, name: str, tensors: int, kv: bytes) -> Path:
    """A file with the GGUF magic whose header lies: `tensors` tensors, one key-value pair `kv`."""
    path = tmp_path / name
    path.write_bytes(struct.pack("<IIQQ", 0x46554747, 3, tensors, 1) + struct.pack("<Q", 1) + b"a" + kv)
    return path


async def test_package_rejects_bad_inputs_with_what_to_fix(stub, tmp_path: Path, tiny_gguf: Path):
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("hello")
    gguf, notes = await uploaded(stub, tiny_gguf), await uploaded(stub, not_gguf)
    # A hostile registry's headers: arrays of arrays 100k deep; 2^62 tensors in a 40-byte file; a tensor
    # of 2^32-1 dimensions; an array of 2^40 strings; a key 1 MiB long.
    nested = await uploaded(stub, _hostile_header(tmp_path, "nested.gguf", 0, struct.pack("<I", 9)
                                                  + struct.pack("<IQ", 9, 1) * 100_000 + struct.pack("<IQ", 4, 0)))
    liar = await uploaded(stub, _hostile_header(tmp_path, "liar.gguf", 2**62, struct.pack("<II", 4, 7)))
    dims = await uploaded(stub, _hostile_header(tmp_path, "dims.gguf", 1, struct.pack("<II", 4, 7) + struct.pack("<Q", 1)
                                                + b"t" + struct.pack("<I", 2**32 - 1) + b"\0" * 4096))
    strings = await uploaded(stub, _hostile_header(tmp_path, "strings.gguf", 0, struct.pack("<IIQ", 9, 8, 2**40)
                                                   + b"\0" * 4096))
    long_key = tmp_path / "key.gguf"
    long_key.write_bytes(struct.pack("<IIQQQ", 0x46554747, 3, 0, 1, 2**20) + b"k" * 4096)
    key = await uploaded(stub, long_key)
    # A header without weights, and a model whose last bytes never arrived.
    empty = await uploaded(stub, _hostile_header(tmp_path, "empty.gguf", 0, struct.pack("<II", 4, 7)))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:-100])
    truncated = await uploaded(stub, cut)
    absent = store_pb2.PackageFile(digest="sha256:" + "0" * 64, name="x.gguf")
    request = store_pb2.PackageModelRequest
    cases = [
        (request(name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "gguf"),
        (request(gguf=[absent], name="ai/x"), grpc.StatusCode.NOT_FOUND, "upload it first"),
        (request(gguf=[store_pb2.PackageFile(digest="/etc/shadow")], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT,
         "gguf[0].digest"),
        (request(gguf=[gguf], license=store_pb2.PackageFile(digest=gguf.digest, name="../../etc/passwd"), name="ai/x"),
         grpc.StatusCode.INVALID_ARGUMENT, "license.name"),
        (request(gguf=[notes], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "not a GGUF file"),
        (request(gguf=[nested], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "arrays nested deeper"),
        (request(gguf=[liar], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "not a valid GGUF file"),
        (request(gguf=[dims], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "dimensions"),
        (request(gguf=[strings], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "strings (at most"),
        (request(gguf=[key], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "a key longer than"),
        (request(gguf=[empty], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "declares no tensors"),
        (request(gguf=[truncated], name="ai/x"), grpc.StatusCode.INVALID_ARGUMENT, "is truncated"),
        (request(gguf=[gguf], name="../x"), grpc.StatusCode.INVALID_ARGUMENT, ""),
        (request(gguf=[gguf], name="ai/x", context_size=-1), grpc.StatusCode.INVALID_ARGUMENT, "context_size"),
    ]
    for bad, code, named in cases:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.PackageModel(bad)
        assert code_of(exc) == code and named in exc.value.details(), bad
    assert (await stub.ListModels(store_pb2.ListModelsRequest())).models == []


def test_package_request_has_no_server_path_fields():
    """The Store opens no path a client names: the fields that once carried one are gone for good."""
    fields = store_pb2.PackageModelRequest.DESCRIPTOR.fields_by_name
    assert not {"gguf_path", "license_path", "chat_template_path"} & set(fields)
