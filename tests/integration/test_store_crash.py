"""The Store killed with SIGKILL mid-write and mid-tag-update: after a restart nothing partial is
visible, nothing committed is lost, and an interrupted upload resumes from the bytes kept."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from modelrunner.v1 import store_pb2, store_pb2_grpc

from tests.integration.test_store_service import (
    CHUNK,
    StoreProcess,
    blob_stream,
    digest_of,
    package,
    put_model,
)

BIG = 200 * CHUNK


async def test_kill_during_a_200mb_write_then_resume(tmp_path: Path, tiny_gguf: Path):
    data = os.urandom(BIG)
    digest = digest_of(data)
    proc = StoreProcess(tmp_path / "models").start()
    try:
        async with proc.channel() as ch:
            stub = store_pb2_grpc.StoreStub(ch)
            committed = await package(stub, tiny_gguf, "ai/kept")
            half = stalled_stream(digest, data, stop_after=BIG // 2)
            call = stub.WriteBlob(half)
            for _ in range(300):  # the Store has the first half on disk
                if (await stub.StatBlob(store_pb2.StatBlobRequest(digest=digest))).partial == BIG // 2:
                    break
                await asyncio.sleep(0.05)
            proc.kill()
            with pytest.raises(grpc.aio.AioRpcError):
                await call

        blob_path = proc.models_dir / "blobs" / "sha256" / digest[7:]
        assert not blob_path.exists()
        proc.start()
        async with proc.reconnected() as ch:
            stub = store_pb2_grpc.StoreStub(ch)
            stat = await stub.StatBlob(store_pb2.StatBlobRequest(digest=digest))
            assert not stat.exists and 0 < stat.partial <= BIG // 2
            assert [m.id for m in (await stub.ListModels(store_pb2.ListModelsRequest())).models] == [committed.id]
            resolved = await stub.ResolveModel(store_pb2.ResolveModelRequest(name="ai/kept"))
            assert Path(resolved.gguf_paths[0]).read_bytes() == tiny_gguf.read_bytes()

            with pytest.raises(grpc.aio.AioRpcError) as exc:  # a writer that ignores StatBlob
                await stub.WriteBlob(blob_stream(digest, BIG, int(stat.partial) + 1, data[int(stat.partial) + 1 :]))
            assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE and str(int(stat.partial)) in exc.value.details()

            offset = int(stat.partial)
            done = await stub.WriteBlob(blob_stream(digest, BIG, offset, data[offset:]))
            assert done.digest == digest and not done.existed
        assert blob_path.read_bytes() == data
        assert list((proc.models_dir / "ingest").iterdir()) == []
    finally:
        proc.stop()


async def stalled_stream(digest: str, data: bytes, stop_after: int):
    """Sends the header and the first `stop_after` bytes, then stalls (the Store is killed meanwhile)."""
    async for message in blob_stream(digest, len(data), 0, data[:stop_after]):
        yield message
    await asyncio.Event().wait()


async def test_kill_during_tag_updates_leaves_a_consistent_index(tmp_path: Path):
    proc = StoreProcess(tmp_path / "models").start()
    try:
        async with proc.channel() as ch:
            stub = store_pb2_grpc.StoreStub(ch)
            one = await put_model(stub, ["ai/one"], [os.urandom(1000)], arch="one")
            two = await put_model(stub, ["ai/two"], [os.urandom(1000)], arch="two")

            async def retag_forever():
                i = 0
                while True:
                    source = "ai/one" if i % 2 else "ai/two"
                    await stub.TagModel(store_pb2.TagModelRequest(source=source, repo="ai/moving", tag=f"t{i % 7}"))
                    i += 1

            task = asyncio.create_task(retag_forever())
            await asyncio.sleep(0.5)
            proc.kill()
            with pytest.raises(grpc.aio.AioRpcError):
                await task

        index = json.loads((proc.models_dir / "index.json").read_text())
        ids = {d["digest"] for d in index["manifests"]}
        assert ids == {one.id, two.id}
        proc.start()
        assert not [p for p in (proc.models_dir / "ingest").iterdir() if p.name.startswith("tmp-")]
        async with proc.reconnected() as ch:
            stub = store_pb2_grpc.StoreStub(ch)
            models = {m.id: m for m in (await stub.ListModels(store_pb2.ListModelsRequest())).models}
            assert set(models) == {one.id, two.id}
            assert "docker.io/ai/one:latest" in models[one.id].tags and "docker.io/ai/two:latest" in models[two.id].tags
            for tags in (m.tags for m in models.values()):
                for tag in tags:
                    await stub.ResolveModel(store_pb2.ResolveModelRequest(name=tag))
        subprocess.run(
            ["/usr/bin/skopeo", "inspect", "--raw", f"oci:{proc.models_dir}:docker.io/ai/one:latest"],
            check=True,
            capture_output=True,
        )
    finally:
        proc.stop()
